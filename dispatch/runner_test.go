package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
	"github.com/llorch/llorch/simengine"
)

// engine is a test engine behind a real HTTP server, counting the
// requests it was sent.
type testEngine struct {
	*httptest.Server
	requests atomic.Int64
}

func newEngine(t *testing.T, h http.Handler) *testEngine {
	t.Helper()
	e := &testEngine{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			e.requests.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.Close)
	return e
}

func simEngine(t *testing.T, cfg simengine.Config) *testEngine {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "/models/tiny.gguf"
	}
	return newEngine(t, simengine.New(cfg).Handler())
}

// refusingEngine answers every request 500 before any token.
func refusingEngine(t *testing.T) *testEngine {
	return newEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":500,"message":"CUDA error: out of memory","type":"server_error"}}`)
	}))
}

// dyingEngine streams two tokens, then its connection drops: the engine
// died mid-task. chat selects the OpenAI chunk format.
func dyingEngine(t *testing.T, chat bool) *testEngine {
	return newEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for i := range 2 {
			if chat {
				fmt.Fprintf(w, `data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" w%d"}}],"object":"chat.completion.chunk"}`+"\n\n", i)
			} else {
				fmt.Fprintf(w, `data: {"index":0,"content":" w%d","tokens":[%d],"stop":false,"id_slot":-1}`+"\n\n", i, 300+i)
			}
		}
		http.NewResponseController(w).Flush() //nolint:errcheck // a test server
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	}))
}

func poolAt(id string, e *testEngine, slots int) scheduler.Candidate {
	c := schedtest.Pool(id).Slots(slots, slots).Models("tiny.gguf").Obj()
	c.Pool.URL = e.URL
	return c
}

type runnerHarness struct {
	*harness
	r *Runner
}

func newRunnerHarness(t *testing.T, cands ...scheduler.Candidate) *runnerHarness {
	t.Helper()
	h := newHarness(t, newFleet(cands...))
	h.run(t)
	return &runnerHarness{harness: h, r: NewRunner(h.d, engineClient(t), quiet)}
}

// start submits a task and runs it.
func (h *runnerHarness) start(t *testing.T, id string, req V2Request) *Task {
	t.Helper()
	task := NewTask(context.Background(), id, "")
	job := NewJob(id, admission.Interactive, scheduler.Request{TaskID: id, Mode: "auto", AllowFallback: true}, time.Time{})
	if _, _, e := h.d.Submit(job); e != nil {
		t.Fatalf("submit: %v", e)
	}
	h.r.Start(task, job, req)
	return task
}

// collect waits for the task's end and returns all its events.
func collect(t *testing.T, task *Task) []Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var all []Event
	for {
		evs, changed, done := task.Events(len(all))
		all = append(all, evs...)
		if done {
			return all
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("task %s did not end; events so far %v", task.ID, types(all))
		}
	}
}

// waitEvent waits until the task has an event of type typ. It is woken by
// each new event, and does not poll.
func waitEvent(t *testing.T, task *Task, typ string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		evs, changed, done := task.Events(0)
		for _, e := range evs {
			if e.Type == typ {
				return
			}
		}
		if done {
			t.Fatalf("task ended without a %s event: %v", typ, types(evs))
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no %s event", typ)
		}
	}
}

func errorOf(t *testing.T, evs []Event) api.Error {
	t.Helper()
	last := evs[len(evs)-1]
	if last.Type != "error" {
		t.Fatalf("last event %q, want error; events %v", last.Type, types(evs))
	}
	var e api.Error
	if err := json.Unmarshal(last.Data, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func count(evs []Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func TestRunnerStreamsATask(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	seed := int64(42)
	evs := collect(t, h.start(t, "t1", V2Request{Prompt: "Once upon a time", MaxTokens: 7, Seed: &seed}))

	want := "started token token token token token token token metrics end"
	if got := strings.Join(types(evs), " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	var started startedEvent
	if err := json.Unmarshal(evs[0].Data, &started); err != nil || started.PoolID != "pool-0" || started.NodeID != "n1" {
		t.Errorf("started %s", evs[0].Data)
	}
	for i, e := range evs[1:8] {
		var tok tokenEvent
		if err := json.Unmarshal(e.Data, &tok); err != nil || tok.I != i || tok.T == "" {
			t.Errorf("token %d: %s", i, e.Data)
		}
	}
	var m metricsEvent
	if err := json.Unmarshal(evs[8].Data, &m); err != nil || m.Retried || m.PromptTokens == 0 {
		t.Errorf("metrics %s", evs[8].Data)
	}
	var end endEvent
	if err := json.Unmarshal(evs[9].Data, &end); err != nil || end.TokensOut != 7 {
		t.Errorf("end %s, want tokens_out 7", evs[9].Data)
	}
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight after the end: %d", n)
	}
}

func TestRunnerRetriesARefusalOnTheNextPool(t *testing.T) {
	bad := refusingEngine(t)
	good := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	// The tie-break puts pool-a first.
	h := newRunnerHarness(t, poolAt("pool-a", bad, 1), poolAt("pool-b", good, 1))
	evs := collect(t, h.start(t, "t1", V2Request{Prompt: "hello", MaxTokens: 3}))

	if last := evs[len(evs)-1]; last.Type != "end" {
		t.Fatalf("events %v, want an end", types(evs))
	}
	if n := count(evs, "started"); n != 1 {
		t.Fatalf("%d started events, want 1: %v", n, types(evs))
	}
	var started startedEvent
	_ = json.Unmarshal(evs[0].Data, &started)
	if evs[0].Type != "started" || started.PoolID != "pool-b" {
		t.Errorf("first event %s %s, want started from pool-b", evs[0].Type, evs[0].Data)
	}
	var m metricsEvent
	for _, e := range evs {
		if e.Type == "metrics" {
			_ = json.Unmarshal(e.Data, &m)
		}
	}
	if !m.Retried {
		t.Error("metrics do not say the task was retried")
	}
	if bad.requests.Load() != 1 || good.requests.Load() != 1 {
		t.Errorf("requests: refusing engine %d, good engine %d; want 1 each", bad.requests.Load(), good.requests.Load())
	}
}

func TestRunnerEngineDiesMidStream(t *testing.T) {
	dying := dyingEngine(t, false)
	spare := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	h := newRunnerHarness(t, poolAt("pool-a", dying, 1), poolAt("pool-b", spare, 1))
	evs := collect(t, h.start(t, "t1", V2Request{Prompt: "hello", MaxTokens: 10}))

	if got, want := strings.Join(types(evs), " "), "started token token error"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	e := errorOf(t, evs)
	if e.Code != api.CodeWorkerReset || !e.Retriable || e.RetryAfterMS <= 0 {
		t.Errorf("error %+v, want WORKER_RESET retriable", e)
	}
	if spare.requests.Load() != 0 {
		t.Error("a task that had streamed tokens was retried elsewhere")
	}
}

func TestRunnerCancelFreesTheSlot(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 20})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	task := h.start(t, "t1", V2Request{Prompt: "hello", MaxTokens: 1000})
	waitEvent(t, task, "token")
	if !slotBusy(t, sim) {
		t.Fatal("the engine's slot is not processing during the task")
	}
	task.Cancel()
	evs := collect(t, task)
	if e := errorOf(t, evs); e.Code != CodeCancelled {
		t.Errorf("error %+v, want CANCELLED", e)
	}
	clocktest.WaitFor(t, time.Second, "the engine's slot to go idle after the cancel", func() bool { return !slotBusy(t, sim) })
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight after the cancel: %d", n)
	}
}

func slotBusy(t *testing.T, e *testEngine) bool {
	t.Helper()
	resp, err := e.Client().Get(e.URL + "/slots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var slots []struct {
		IsProcessing bool `json:"is_processing"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&slots); err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.IsProcessing {
			return true
		}
	}
	return false
}

func TestRunnerContextExceededIsNotRetried(t *testing.T) {
	// 16 tokens of context: a 40-word prompt cannot fit.
	small := simengine.Config{CtxSize: 16, TokensPerSecond: 2000}
	a, b := simEngine(t, small), simEngine(t, small)
	h := newRunnerHarness(t, poolAt("pool-a", a, 1), poolAt("pool-b", b, 1))
	evs := collect(t, h.start(t, "t1", V2Request{Prompt: strings.Repeat("word ", 40), MaxTokens: 5}))

	if len(evs) != 1 {
		t.Errorf("events %v, want the error alone", types(evs))
	}
	e := errorOf(t, evs)
	if e.Code != api.CodeInvalidParams || !strings.Contains(e.Message, "exceed_context_size_error") {
		t.Errorf("error %+v, want INVALID_PARAMS about the context size", e)
	}
	if n := a.requests.Load() + b.requests.Load(); n != 1 {
		t.Errorf("%d engine requests, want 1 (no retry)", n)
	}
	// The pool is fine: no quarantine.
	failures := 0
	h.d.mu.Lock()
	for _, b := range h.d.books {
		if !b.failure.IsZero() {
			failures++
		}
	}
	h.d.mu.Unlock()
	if failures != 0 {
		t.Errorf("%d pools quarantined after a refusal of the request itself", failures)
	}
}

func TestRunnerJobFailsWhileQueued(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	task := NewTask(context.Background(), "t1", "")
	job := NewJob("t1", admission.Interactive, scheduler.Request{Mode: "auto", MaxTokens: 1}, time.Now().Add(50*time.Millisecond))
	// Hold the only slot so the job waits past its deadline.
	holder := NewJob("holder", admission.Interactive, scheduler.Request{Mode: "auto", MaxTokens: 1}, time.Time{})
	if _, _, e := h.d.Submit(holder); e != nil {
		t.Fatal(e)
	}
	waitPlaced(t, holder)
	if _, _, e := h.d.Submit(job); e != nil {
		t.Fatal(e)
	}
	h.r.Start(task, job, V2Request{Prompt: "x", MaxTokens: 1})
	if e := errorOf(t, collect(t, task)); e.Code != api.CodeDeadlineUnmet {
		t.Errorf("error %+v, want DEADLINE_UNMET", e)
	}
}

func TestRunnerCancelWhileQueued(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	holder := NewJob("holder", admission.Interactive, scheduler.Request{Mode: "auto"}, time.Time{})
	if _, _, e := h.d.Submit(holder); e != nil {
		t.Fatal(e)
	}
	waitPlaced(t, holder)
	task := h.start(t, "t1", V2Request{Prompt: "x", MaxTokens: 1})
	task.Cancel()
	if e := errorOf(t, collect(t, task)); e.Code != CodeCancelled {
		t.Errorf("error %+v, want CANCELLED", e)
	}
	if n := h.queue.Len(admission.Interactive); n != 0 {
		t.Errorf("the cancelled task is still queued (%d)", n)
	}
	if sim.requests.Load() != 0 {
		t.Error("a task cancelled while queued reached the engine")
	}
}

// A refusal with no other pool to retry on ends the task at once, with the
// engine's error.
func TestRunnerRefusalWithoutAnotherPool(t *testing.T) {
	bad := refusingEngine(t)
	h := newRunnerHarness(t, poolAt("pool-0", bad, 1))
	begin := time.Now()
	evs := collect(t, h.start(t, "t1", V2Request{Prompt: "hello", MaxTokens: 3}))
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("the task ended after %v", took)
	}
	e := errorOf(t, evs)
	if e.Code != api.CodeWorkerReset || !e.Retriable || !strings.Contains(e.Message, "out of memory") {
		t.Errorf("error %+v, want WORKER_RESET with the engine's message", e)
	}
	if len(evs) != 1 {
		t.Errorf("events %v, want the error alone", types(evs))
	}
}
