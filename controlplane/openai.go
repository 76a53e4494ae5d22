package controlplane

import (
	"cmp"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/scheduler"
)

// openAIError writes an error the way OpenAI clients read it
// ({"error":{"message","type","code"}}), Retry-After included.
func openAIError(w http.ResponseWriter, status int, e api.Error) { api.WriteOpenAIError(w, status, e) }

// openAICompletion serves POST /v1/chat/completions and /v1/completions:
// the request is placed like any task and forwarded unchanged to the
// chosen engine's same route.
func (s *server) openAICompletion(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil || len(body) > api.MaxBodyBytes {
		openAIError(w, http.StatusRequestEntityTooLarge, api.Error{Code: api.CodeInvalidParams, Message: "body over 1 MiB or unreadable"})
		return
	}
	var head struct {
		Model               string `json:"model"`
		User                string `json:"user"`
		MaxTokens           int    `json:"max_tokens"`
		MaxCompletionTokens int    `json:"max_completion_tokens"`
		NPredict            int    `json:"n_predict"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		openAIError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: "invalid JSON: " + err.Error()})
		return
	}
	session := r.Header.Get("X-Session-Id")
	if session == "" {
		session = head.User
	}
	// X-Priority takes the task API's priorities, and refuses others as
	// the task API refuses "priority".
	prio, err := admission.ParsePriority(r.Header.Get("X-Priority"))
	if err != nil {
		openAIError(w, http.StatusBadRequest, api.Error{Code: api.CodeInvalidParams, Message: "X-Priority: " + err.Error()})
		return
	}
	id := api.NewCorrelationID()
	req := scheduler.Request{TaskID: id, SessionID: session, Model: s.modelFor(head.Model), Mode: "auto", AllowFallback: true,
		// The body is mostly its prompt: about 4 bytes a token.
		PromptTokens: promptTokens(len(body)),
		MaxTokens:    cmp.Or(head.MaxCompletionTokens, head.MaxTokens, head.NPredict),
	}
	job := dispatch.NewJob(id, prio, req, time.Time{})
	job.Trace = trace.SpanContextFromContext(r.Context())
	if _, _, apiErr := s.dispatcher.Submit(job); apiErr != nil {
		s.metrics.TaskEnded(rejectionOutcome(apiErr.Code))
		openAIError(w, dispatch.StatusOf(apiErr.Code), *apiErr)
		return
	}
	if apiErr := s.proxy.Forward(w, r, r.URL.Path, body, job, session); apiErr != nil {
		openAIError(w, dispatch.StatusOf(apiErr.Code), *apiErr)
	}
}

// promptTokens estimates a prompt's tokens from its bytes: about 4 bytes a
// token for English text in llama-family vocabularies. Placement only
// needs its size, to weigh prefill against queueing.
func promptTokens(bytes int) int { return (bytes + 3) / 4 }

// modelFor maps an OpenAI "model" to placement's model filter: a model no
// pool names (clients often send a placeholder such as "gpt-3.5-turbo")
// is taken as "any model" when the fleet serves exactly one.
func (s *server) modelFor(model string) string {
	models := s.models()
	for _, m := range models {
		if m == model {
			return model
		}
	}
	if len(models) == 1 {
		return ""
	}
	return model
}

// models lists the models of ready pools on online nodes; the list is
// rebuilt when a versioned fleet (the registry) changed, so an OpenAI
// request does not walk the whole fleet.
func (s *server) models() []string {
	v, versioned := s.fleet.(dispatch.Versioned)
	if !versioned {
		return s.listServedModels()
	}
	ver := v.Version()
	s.modelsMu.Lock()
	defer s.modelsMu.Unlock()
	if s.modelsList == nil || ver != s.modelsVer {
		s.modelsList, s.modelsVer = s.listServedModels(), ver
	}
	return s.modelsList
}

func (s *server) listServedModels() []string {
	seen := map[string]bool{}
	for _, c := range s.fleet.Candidates() {
		if c.NodeStatus != api.StatusOnline || !c.Pool.Ready {
			continue
		}
		for _, m := range c.Pool.Models {
			seen[m] = true
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func (s *server) listModels(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	data := []model{}
	for _, m := range s.models() {
		data = append(data, model{ID: m, Object: "model", Created: s.started.Unix(), OwnedBy: "llorch"})
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
