package controlplane

import (
	"errors"
	"math"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/sse"
)

// sseKeepAlive is how often an idle event stream gets a comment ping.
const sseKeepAlive = 15 * time.Second

func (s *server) submitTask(w http.ResponseWriter, r *http.Request) {
	var req api.TaskRequest
	if !api.DecodeRequest(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: err.Error()})
		return
	}
	if req.TaskID == "" {
		req.TaskID = api.NewCorrelationID()
	}
	prio, _ := admission.ParsePriority(req.Priority)
	var deadline time.Time
	if req.DeadlineMS > 0 {
		deadline = time.Now().Add(time.Duration(req.DeadlineMS) * time.Millisecond)
	}
	task := dispatch.NewTask(r.Context(), req.TaskID, req.SessionID)
	if !s.tasks.Add(task) {
		api.WriteError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: "task_id " + req.TaskID + " already exists"})
		return
	}
	job := dispatch.NewJob(req.TaskID, prio, schedRequest(&req), deadline)
	job.Trace = trace.SpanContextFromContext(r.Context())
	pos, predicted, apiErr := s.dispatcher.Submit(job)
	if apiErr != nil {
		task.Fail(apiErr)
		s.metrics.TaskEnded(rejectionOutcome(apiErr.Code))
		api.WriteError(w, dispatch.StatusOf(apiErr.Code), *apiErr)
		return
	}
	s.runner.Start(task, job, dispatch.V2Request{Prompt: req.Prompt, MaxTokens: req.MaxTokens, Seed: req.Seed})
	api.WriteJSON(w, http.StatusAccepted, api.TaskAccepted{
		TaskID: req.TaskID, QueuePosition: pos, PredictedStartMS: predicted.Milliseconds(),
		Streams: map[string]string{"sse": "/v2/tasks/" + req.TaskID + "/events"},
	})
}

func msOf(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

func rejectionOutcome(code string) string {
	switch code {
	case api.CodeAdmissionReject:
		return "rejected"
	case api.CodeDeadlineUnmet:
		return "deadline"
	case api.CodeShuttingDown:
		return "shutdown"
	}
	return "unavailable"
}

// schedRequest turns a task's placement fields into the scheduler's.
func schedRequest(t *api.TaskRequest) scheduler.Request {
	r := scheduler.Request{TaskID: t.TaskID, SessionID: t.SessionID, Model: t.ModelRef, Mode: "auto", AllowFallback: true,
		PromptTokens: promptTokens(len(t.Prompt)), MaxTokens: t.MaxTokens, DeviceMask: t.DeviceMask}
	if p := t.Placement; p != nil {
		if p.Mode != "" {
			r.Mode = p.Mode
		}
		r.PinPoolID, r.NodeID = p.PinPoolID, p.NodeID
		if p.DeviceMask != "" {
			r.DeviceMask = p.DeviceMask
		}
		r.PreferPools, r.AvoidPools = p.PreferPools, p.AvoidPools
		if p.AllowFallback != nil {
			r.AllowFallback = *p.AllowFallback
		}
	}
	return r
}

// taskEvents streams a task's events: every event from admission, then
// new ones as they come, until the final end or error. A client that
// leaves before the end cancels the task if no one else is watching.
func (s *server) taskEvents(w http.ResponseWriter, r *http.Request) {
	task, ok := s.tasks.Get(r.PathValue("id"))
	if !ok {
		api.WriteError(w, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "unknown task " + r.PathValue("id")})
		return
	}
	unwatch := task.Watch()
	defer func() {
		if last := unwatch(); last {
			if _, done := task.Finished(); !done && r.Context().Err() != nil {
				task.Cancel()
			}
		}
	}()
	out := sse.NewWriter(w)
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// A subscriber that stops reading is dropped after the write timeout;
	// the task runs on and its events stay readable.
	rc, limit := http.NewResponseController(w), s.dispatcher.ClientWriteTimeout()
	deadline := func() {
		if limit > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(limit)) // recorders cannot: no limit then
		}
	}
	ping := time.NewTicker(sseKeepAlive)
	defer ping.Stop()
	next := 0
	for {
		events, changed, done := task.Events(next)
		deadline()
		for _, e := range events {
			if err := out.Event(e.Type, e.Data); err != nil {
				return
			}
		}
		next += len(events)
		if done {
			return
		}
		select {
		case <-changed:
		case <-ping.C:
			deadline()
			if err := out.Comment("ping"); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (s *server) cancelTask(w http.ResponseWriter, r *http.Request) {
	task, ok := s.tasks.Get(r.PathValue("id"))
	if !ok {
		api.WriteError(w, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "unknown task " + r.PathValue("id")})
		return
	}
	task.Cancel()
	w.WriteHeader(http.StatusNoContent)
}

// explain ranks the fleet for a hypothetical task, as placement would now.
func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := api.TaskRequest{ModelRef: q.Get("model"), SessionID: q.Get("session_id"), Prompt: "explain"}
	if pin := q.Get("pin_pool_id"); pin != "" {
		req.Placement = &api.TaskPlacement{Mode: "pin", PinPoolID: pin, NodeID: q.Get("node_id")}
	} else if node := q.Get("node_id"); node != "" {
		req.Placement = &api.TaskPlacement{NodeID: node}
	}
	if avoid := q["avoid_pool"]; len(avoid) > 0 {
		if req.Placement == nil {
			req.Placement = &api.TaskPlacement{}
		}
		req.Placement.AvoidPools = avoid
	}
	dec, err := s.dispatcher.Explain(schedRequest(&req))
	if err != nil && !errors.Is(err, scheduler.ErrNoCandidates) {
		api.WriteError(w, http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: err.Error()})
		return
	}
	api.WriteJSON(w, http.StatusOK, s.explanation(req.ModelRef, dec))
}

func (s *server) explanation(model string, dec *scheduler.Decision) api.Explanation {
	scorers := s.dispatcher.Scorers()
	out := api.Explanation{Model: model, Scorers: map[string]int64{}, Candidates: []api.ExplainedCandidate{}, Rejected: []api.ExplainedRejection{}}
	for _, ws := range scorers {
		out.Scorers[ws.Plugin.Name()] = ws.Weight
	}
	if dec == nil {
		return out
	}
	now := time.Now()
	for i, rk := range dec.Ranked {
		c := rk.Candidate
		ec := api.ExplainedCandidate{Rank: i + 1, NodeID: c.NodeID, PoolID: c.Pool.PoolID, ReplicaID: c.ReplicaID, Total: rk.Total,
			Components: make(map[string]int64, len(scorers)), FreeSlots: c.FreeSlots(), InFlight: c.InFlight, MetricsAgeMS: -1,
			Foreign: c.Foreign, Waiting: c.Waiting, HasRoom: c.HasRoom(s.dispatcher.Backlog()),
			Expected: api.ExpectedLatency{WaitMS: msOf(rk.Estimate.Wait), TTFTMS: msOf(rk.Estimate.TTFT), LatencyMS: msOf(rk.Estimate.Latency),
				SpeedSource: rk.Estimate.Source, DecodeTPS: c.Speed.DecodeTPS, PrefillTPS: c.Speed.PrefillTPS, Samples: c.Speed.Samples},
		}
		for j, ws := range scorers {
			ec.Components[ws.Plugin.Name()] = rk.Components[j]
		}
		if !c.Util.At.IsZero() {
			ec.MetricsAgeMS = int64(math.Round(float64(now.Sub(c.Util.At).Milliseconds())))
		}
		out.Candidates = append(out.Candidates, ec)
	}
	for _, rj := range dec.Rejected {
		out.Rejected = append(out.Rejected, api.ExplainedRejection{NodeID: rj.Candidate.NodeID, PoolID: rj.Candidate.Pool.PoolID,
			ReplicaID: rj.Candidate.ReplicaID, Filter: rj.Plugin, Reason: rj.Reason})
	}
	return out
}
