package dispatch

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
	"github.com/llorch/llorch/simengine"
)

var errStopping = ErrShuttingDown("test: shutting down")

func TestCloseFailsQueuedJobsAndRefusesNewOnes(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()))
	running := h.submit(t, "running", admission.Interactive, auto(""))
	waitPlaced(t, running)
	q1 := h.submit(t, "q1", admission.Interactive, auto(""))
	q2 := h.submit(t, "q2", admission.Batch, auto(""))

	if n := h.d.Close(errStopping); n != 2 {
		t.Errorf("Close failed %d queued jobs, want 2", n)
	}
	if !h.d.Closed() {
		t.Error("Closed() = false after Close")
	}
	for _, j := range []*Job{q1, q2} {
		if e := waitFailed(t, j); e.Code != api.CodeShuttingDown || !e.Retriable || e.RetryAfterMS <= 0 {
			t.Errorf("%s failed with %+v, want SHUTTING_DOWN retriable", j.ID, e)
		}
	}
	_, _, e := h.d.Submit(NewJob("late", admission.Interactive, auto(""), time.Time{}))
	if e == nil || e.Code != api.CodeShuttingDown || StatusOf(e.Code) != http.StatusServiceUnavailable {
		t.Errorf("Submit after Close: %+v, want SHUTTING_DOWN (503)", e)
	}
	if got := testutil.ToFloat64(h.m.queueDepthVec.WithLabelValues("interactive")); got != 0 {
		t.Errorf("queue depth after Close: %v", got)
	}
	// The running job is untouched: it still holds its slot.
	if n := h.inflight("n1/pool-0"); n != 1 {
		t.Errorf("in flight after Close: %d, want the running job's 1", n)
	}
	// A second Close finds nothing left.
	if n := h.d.Close(errStopping); n != 0 {
		t.Errorf("second Close failed %d", n)
	}
}

func TestRetryAfterCloseQueuesNothing(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-a").Slots(1, 1).Obj(), schedtest.Pool("pool-b").Slots(1, 1).Obj()))
	j := h.submit(t, "j", admission.Interactive, auto(""))
	pl := waitPlaced(t, j)
	h.d.Close(errStopping)
	if h.d.Retry(j, pl) {
		t.Error("Retry queued a job on a closed dispatcher")
	}
	if h.queue.Len(admission.Interactive) != 0 {
		t.Error("the job is queued")
	}
}

// A v2 task running at Abort ends with the abort's error event, its slot
// given back; Drain waits for it until its context ends.
func TestAbortStopsRunningTasks(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 20})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	task := h.start(t, "long", V2Request{Prompt: "hello", MaxTokens: 1000})
	waitEvent(t, task, "token")
	h.d.Close(errStopping)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.d.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with a task running = %v, want the grace to run out", err)
	}
	if n := h.d.Running(); n != 1 {
		t.Fatalf("Running() = %d, want 1", n)
	}
	if n := h.d.Abort(errStopping); n != 1 {
		t.Errorf("Abort stopped %d, want 1", n)
	}
	evs := collect(t, task)
	if e := errorOf(t, evs); e.Code != api.CodeShuttingDown || !e.Retriable {
		t.Errorf("aborted task ended with %+v, want SHUTTING_DOWN retriable", e)
	}
	if count(evs, "token") == 0 || count(evs, "end") != 0 {
		t.Errorf("events %v", types(evs))
	}
	drained, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := h.d.Drain(drained); err != nil {
		t.Fatalf("Drain after Abort: %v", err)
	}
	if err := h.r.Wait(drained); err != nil {
		t.Fatalf("Runner.Wait after Abort: %v", err)
	}
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight after Abort: %d", n)
	}
	if got := testutil.ToFloat64(h.m.tasks.WithLabelValues("shutdown")); got != 1 {
		t.Errorf(`llorch_tasks_total{outcome="shutdown"} = %v, want 1`, got)
	}
}

// A job that reaches Execute after Abort (placed just before Close) is
// stopped at once rather than started.
func TestExecuteAfterAbortStopsAtOnce(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	h := newRunnerHarness(t, poolAt("pool-0", sim, 1))
	job := NewJob("edge", admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
	if _, _, e := h.d.Submit(job); e != nil {
		t.Fatal(e)
	}
	h.d.Abort(errStopping)
	task := NewTask(context.Background(), "edge", "")
	h.r.Start(task, job, V2Request{Prompt: "x", MaxTokens: 5})
	if e := errorOf(t, collect(t, task)); e.Code != api.CodeShuttingDown {
		t.Errorf("error %+v, want SHUTTING_DOWN", e)
	}
	if sim.requests.Load() != 0 {
		t.Error("the engine was sent a task after Abort")
	}
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight: %d", n)
	}
}

// The OpenAI proxy: a request waiting in the queue gets Close's error to
// write as a 503; a stream cut by Abort ends with an OpenAI-shaped error
// event, then closes.
func TestShutdownOfOpenAIRequests(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 20})
	h := newHarness(t, newFleet(poolAt("pool-0", sim, 1)))
	h.run(t)
	p := NewProxy(h.d, engineClient(t), quiet)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := `{"messages":[{"role":"user","content":"x"}],"max_tokens":1000,"stream":true}`
		job := NewJob(r.URL.Query().Get("id"), admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
		if _, _, e := h.d.Submit(job); e != nil {
			api.WriteOpenAIError(w, StatusOf(e.Code), *e)
			return
		}
		if e := p.Forward(w, r, "/v1/chat/completions", []byte(body), job, ""); e != nil {
			api.WriteOpenAIError(w, StatusOf(e.Code), *e)
		}
	}))
	defer srv.Close()
	client := engineClient(t)

	streaming, err := client.Post(srv.URL+"?id=streaming", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer streaming.Body.Close()
	lines := bufio.NewReader(streaming.Body)
	if _, err := lines.ReadString('\n'); err != nil { // the first chunk: it runs
		t.Fatal(err)
	}
	queued := make(chan *http.Response, 1)
	go func() {
		resp, err := client.Post(srv.URL+"?id=queued", "application/json", nil) //nolint:bodyclose // the test closes it
		if err != nil {
			t.Error(err)
		}
		queued <- resp
	}()
	clocktest.WaitFor(t, 5*time.Second, "the second request to queue", func() bool { return h.queue.Len(admission.Interactive) > 0 })

	h.d.Close(errStopping)
	resp := <-queued
	if resp == nil {
		t.FailNow()
	}
	b := new(strings.Builder)
	_, _ = bufio.NewReader(resp.Body).WriteTo(b)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(b.String(), `"code":"SHUTTING_DOWN"`) || !strings.Contains(b.String(), `"type":"server_error"`) {
		t.Errorf("queued OpenAI request: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}

	h.d.Abort(errStopping)
	rest := new(strings.Builder)
	if _, err := lines.WriteTo(rest); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
	tail := rest.String()
	if !strings.Contains(tail, "event: error\ndata: {\"error\":{") || !strings.Contains(tail, `"code":"SHUTTING_DOWN"`) ||
		strings.Contains(tail, "[DONE]") {
		t.Errorf("the aborted stream ended with %q", tail[max(0, len(tail)-300):])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight after Abort: %d", n)
	}
	if got := testutil.ToFloat64(h.m.tasks.WithLabelValues("shutdown")); got != 2 {
		t.Errorf(`llorch_tasks_total{outcome="shutdown"} = %v, want 2 (the queued request and the stream)`, got)
	}
}

func TestFailUnfinishedEndsEveryOpenTask(t *testing.T) {
	s := NewStore(time.Minute)
	open, done := NewTask(context.Background(), "open", ""), NewTask(context.Background(), "done", "")
	s.Add(open)
	s.Add(done)
	done.End(map[string]int{"tokens_out": 1})
	if n := s.FailUnfinished(errStopping); n != 1 {
		t.Errorf("FailUnfinished ended %d, want 1", n)
	}
	evs, _, finished := open.Events(0)
	if !finished || len(evs) != 1 || evs[0].Type != "error" || !strings.Contains(string(evs[0].Data), api.CodeShuttingDown) {
		t.Errorf("open task: finished=%v %v", finished, evs)
	}
	if open.Context().Err() == nil {
		t.Error("the failed task's context is live")
	}
	if evs, _, _ := done.Events(0); len(evs) != 1 || evs[0].Type != "end" {
		t.Errorf("the finished task was changed: %v", evs)
	}
}
