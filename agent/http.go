package agent

import (
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/pool"
)

// HandlerOptions configure the agent's HTTP routes.
type HandlerOptions struct {
	Pools    *pool.Table
	Token    string
	Version  string
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
	// Drain drains a pool with a deadline (0: the default one) and reports
	// whether it exists: Daemon.DrainPool. nil marks the pool draining in
	// the table and nothing more.
	Drain func(poolID string, deadline time.Duration) bool
}

// NewHandler returns the node agent's routes (SPEC §4).
func NewHandler(opts HandlerOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	drain := opts.Drain
	if drain == nil {
		drain = func(id string, _ time.Duration) bool { return opts.Pools.Drain(id) }
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.Health{Status: "ok", Version: opts.Version})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError), EnableOpenMetrics: true}))
	mux.HandleFunc("GET /pools", func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, opts.Pools.Snapshot())
	})
	mux.HandleFunc("GET /pools/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		st, ok := opts.Pools.Status(r.PathValue("id"))
		if !ok {
			unknownPool(w, r.PathValue("id"))
			return
		}
		api.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /pools/{id}/drain", func(w http.ResponseWriter, r *http.Request) {
		var req api.DrainRequest
		// The body is optional: an empty POST, or deadline_ms 0, drains
		// with the default deadline (--drain-timeout).
		if r.ContentLength != 0 && !api.DecodeRequest(w, r, &req) {
			return
		}
		if req.DeadlineMS < 0 {
			api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: "deadline_ms must be >= 0"})
			return
		}
		id := r.PathValue("id")
		deadline := time.Duration(min(req.DeadlineMS, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond
		if !drain(id, deadline) {
			unknownPool(w, id)
			return
		}
		opts.Logger.Info("pool draining", "pool_id", id, "deadline_ms", req.DeadlineMS)
		st, _ := opts.Pools.Status(id)
		api.WriteJSON(w, http.StatusAccepted, st)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
	})
	return api.WithCorrelationID(api.RequireToken(opts.Token, []string{"/health", "/metrics"}, mux))
}

func unknownPool(w http.ResponseWriter, id string) {
	api.WriteError(w, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "unknown pool " + id})
}
