package controlplane

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/registry"
)

// Options configure the control plane's handler.
type Options struct {
	// Registry is nil when the cloud profile is off; node routes then
	// answer 503.
	Registry *registry.Registry
	// Shared, with --registry etcd, says how the shared registry stands,
	// for /health.
	Shared func() (backend, condition string)
	// Token guards every route but /health and /metrics; empty disables it.
	Token    string
	Version  string
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
	// Inference serves tasks; nil answers the task routes 503.
	Inference *Inference
}

// Inference is the task path: where pools come from, the dispatcher that
// places tasks, and the executors.
type Inference struct {
	Fleet      dispatch.Fleet
	Dispatcher *dispatch.Dispatcher
	Runner     *dispatch.Runner
	Proxy      *dispatch.Proxy
	Tasks      *dispatch.Store
	Metrics    *dispatch.Metrics
}

type server struct {
	reg     *registry.Registry
	shared  func() (backend, condition string)
	version string
	log     *slog.Logger
	started time.Time

	fleet      dispatch.Fleet
	dispatcher *dispatch.Dispatcher
	runner     *dispatch.Runner
	proxy      *dispatch.Proxy
	tasks      *dispatch.Store
	metrics    *dispatch.Metrics

	modelsMu   sync.Mutex
	modelsVer  uint64
	modelsList []string // served models at fleet version modelsVer
}

// NewHandler returns the control plane's routes with correlation IDs and
// token auth applied.
func NewHandler(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &server{reg: opts.Registry, shared: opts.Shared, version: opts.Version, log: opts.Logger, started: time.Now()}
	if in := opts.Inference; in != nil {
		s.fleet, s.dispatcher, s.runner, s.proxy, s.tasks, s.metrics = in.Fleet, in.Dispatcher, in.Runner, in.Proxy, in.Tasks, in.Metrics
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError), EnableOpenMetrics: true}))
	mux.HandleFunc("POST /v2/nodes/register", s.cloud(s.register))
	mux.HandleFunc("POST /v2/nodes/{id}/heartbeat", s.cloud(s.heartbeat))
	mux.HandleFunc("DELETE /v2/nodes/{id}", s.cloud(s.deregister))
	mux.HandleFunc("GET /v2/nodes/{id}", s.cloud(s.getNode))
	mux.HandleFunc("GET /v2/nodes", s.cloud(s.listNodes))
	mux.HandleFunc("GET /v2/sd", s.cloud(s.serviceDiscovery))
	mux.HandleFunc("POST /v2/tasks", s.inference(s.admitting(s.submitTask)))
	mux.HandleFunc("GET /v2/tasks/{id}/events", s.inference(s.taskEvents))
	mux.HandleFunc("POST /v2/tasks/{id}/cancel", s.inference(s.cancelTask))
	mux.HandleFunc("GET /v2/placement/explain", s.inference(s.explain))
	mux.HandleFunc("POST /v1/chat/completions", s.inference(s.admitting(s.openAICompletion)))
	mux.HandleFunc("POST /v1/completions", s.inference(s.admitting(s.openAICompletion)))
	mux.HandleFunc("GET /v1/models", s.inference(s.listModels))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteErrorFor(w, r, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
	})
	return api.WithCorrelationID(api.RequireToken(opts.Token, []string{"/health", "/metrics"}, mux))
}

// health answers 200 while the process runs: "ok", or "draining" once
// shutdown began (admission closed; running tasks finishing). It stays
// 200 while draining, so a liveness probe does not kill a control plane
// that is finishing its tasks; a load balancer reads the status. With a
// shared registry it says how that stands ("degraded" while etcd cannot
// be reached: the replica still places tasks on what it knows, so it
// stays 200).
func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	h := api.Health{Status: "ok", Version: s.version}
	if s.shared != nil {
		h.Registry, h.RegistryCondition = s.shared()
		if h.RegistryCondition != "" {
			h.Status = "degraded"
		}
	}
	if s.dispatcher != nil && s.dispatcher.Closed() {
		h.Status = "draining"
	}
	api.WriteJSON(w, http.StatusOK, h)
}

// admitting answers 503 SHUTTING_DOWN, with Retry-After, to requests that
// would start new work once shutdown began; each route in its own shape.
func (s *server) admitting(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.dispatcher.Closed() {
			// The client is told, then its connection closed: it reconnects
			// elsewhere (closing idle connections instead would reset
			// requests already on their way).
			w.Header().Set("Connection", "close")
			if s.metrics != nil {
				s.metrics.TaskEnded("shutdown")
			}
			api.WriteErrorFor(w, r, http.StatusServiceUnavailable, *dispatch.ErrShuttingDown(
				"the control plane is shutting down and admits no new tasks; submit to another control plane, or retry once it restarted"))
			return
		}
		h(w, r)
	}
}

// cloud answers 503 for node routes when the registry is off (HOME profile).
func (s *server) cloud(h http.HandlerFunc) http.HandlerFunc {
	if s.reg != nil {
		return h
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		api.WriteError(w, http.StatusServiceUnavailable, api.Error{
			Code:    api.CodeNodeUnavailable,
			Message: "the node registry needs the cloud profile: start orchestratord with --cloud-profile",
		})
	}
}

// inference answers task routes 503 when no task path is configured.
func (s *server) inference(h http.HandlerFunc) http.HandlerFunc {
	if s.dispatcher != nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		api.WriteErrorFor(w, r, http.StatusServiceUnavailable, api.Error{Code: api.CodePoolUnavailable, Message: "this control plane serves no tasks",
			Retriable: true, RetryAfterMS: 5000})
	}
}

func (s *server) register(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterRequest
	if !api.DecodeRequest(w, r, &req) {
		s.reg.RejectRegistration()
		return
	}
	if err := req.Validate(); err != nil {
		s.reg.RejectRegistration()
		api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: err.Error()})
		return
	}
	s.reg.Register(req)
	api.WriteJSON(w, http.StatusOK, api.RegisterResponse{Success: true, Message: "registered", NodeID: req.NodeID})
}

func (s *server) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var hb api.HeartbeatRequest
	if !api.DecodeRequest(w, r, &hb) {
		s.reg.RejectHeartbeat()
		return
	}
	if err := hb.Validate(); err != nil {
		s.reg.RejectHeartbeat()
		api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: err.Error()})
		return
	}
	if err := s.reg.Heartbeat(id, hb); err != nil {
		s.unknownNode(w, id, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.HeartbeatResponse{Success: true, NextHeartbeatMS: s.reg.NextHeartbeat().Milliseconds()})
}

func (s *server) deregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.reg.Deregister(id); err != nil {
		s.unknownNode(w, id, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) getNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, ok := s.reg.Get(id)
	if !ok {
		s.unknownNode(w, id, registry.ErrUnknownNode)
		return
	}
	api.WriteJSON(w, http.StatusOK, n)
}

func (s *server) unknownNode(w http.ResponseWriter, id string, err error) {
	if !errors.Is(err, registry.ErrUnknownNode) {
		api.WriteError(w, http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: err.Error()})
		return
	}
	api.WriteError(w, http.StatusNotFound, api.Error{
		Code:    api.CodeNotFound,
		Message: "unknown node " + id + ": register first",
	})
}

func (s *server) listNodes(w http.ResponseWriter, r *http.Request) {
	all := false
	switch st := r.URL.Query().Get("status"); st {
	case "", "active":
	case "all":
		all = true
	default:
		api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: "status=" + st + ": want all or active"})
		return
	}
	nodes := s.reg.List(all)
	api.WriteJSON(w, http.StatusOK, api.NodeList{Nodes: nodes, Count: len(nodes)})
}

// serviceDiscovery serves Prometheus HTTP SD: one target group per node,
// offline ones included so their scrapes fail visibly (up == 0) instead of
// silently vanishing. Status is a __meta_ label for relabeling, not a target
// label, so a status change does not start a new series.
func (s *server) serviceDiscovery(w http.ResponseWriter, r *http.Request) {
	nodes := s.reg.List(true)
	groups := make([]api.SDTargetGroup, 0, len(nodes))
	for _, n := range nodes {
		target, err := scrapeTarget(n.Address)
		if err != nil {
			s.log.WarnContext(r.Context(), "service discovery: node address has no host:port", "node_id", n.NodeID, "address", n.Address, "err", err)
			continue
		}
		groups = append(groups, api.SDTargetGroup{
			Targets: []string{target},
			Labels: map[string]string{
				"node_id":               n.NodeID,
				"machine_id":            n.MachineID,
				"__meta_llorch_status":  n.Status,
				"__meta_llorch_version": n.Version,
				"__meta_llorch_scheme":  schemeOf(n.Address),
			},
		})
	}
	api.WriteJSON(w, http.StatusOK, groups)
}

// scrapeTarget turns an agent's external URL into Prometheus' host:port.
func scrapeTarget(address string) (string, error) {
	u, err := url.Parse(address)
	if err != nil {
		return "", err
	}
	if u.Port() != "" {
		return u.Host, nil
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	if u.Hostname() == "" {
		return "", errors.New("empty host")
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

func schemeOf(address string) string {
	if u, err := url.Parse(address); err == nil && u.Scheme != "" {
		return u.Scheme
	}
	return "http"
}
