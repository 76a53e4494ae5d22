package dispatch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/simengine"
)

// A waiter that gives up just as its job is placed must not keep the slot:
// the placement already sits in the job's channel when Wait sees the
// cancelled context, and select picks either at random.
func TestCancelRacingPlacementReleasesTheSlot(t *testing.T) {
	sim := simEngine(t, simengine.Config{TokensPerSecond: 2000})
	client := engineClient(t)
	const rounds = 40

	t.Run("runner", func(t *testing.T) {
		for i := range rounds {
			h := newHarness(t, newFleet(poolAt("pool-0", sim, 1)))
			r := NewRunner(h.d, client, quiet)
			task := NewTask(context.Background(), "t", "")
			job := NewJob("t", admission.Interactive, scheduler.Request{Mode: "auto"}, time.Time{})
			if _, _, e := h.d.Submit(job); e != nil {
				t.Fatal(e)
			}
			h.d.pass() // placed, not yet collected
			task.Cancel()
			r.Start(task, job, V2Request{Prompt: "x", MaxTokens: 1})
			if e := errorOf(t, collect(t, task)); e.Code != CodeCancelled {
				t.Fatalf("round %d: %+v, want CANCELLED", i, e)
			}
			if n := h.inflight("n1/pool-0"); n != 0 {
				t.Fatalf("round %d: %d in flight after the task was cancelled: the slot leaked", i, n)
			}
		}
	})

	t.Run("proxy", func(t *testing.T) {
		for i := range rounds {
			h := newHarness(t, newFleet(poolAt("pool-0", sim, 1)))
			p := NewProxy(h.d, client, quiet)
			job := NewJob("t", admission.Interactive, scheduler.Request{Mode: "auto"}, time.Time{})
			if _, _, e := h.d.Submit(job); e != nil {
				t.Fatal(e)
			}
			h.d.pass()
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the client left
			body := `{"messages":[{"role":"user","content":"x"}],"max_tokens":1}`
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			if e := p.Forward(httptest.NewRecorder(), req, "/v1/chat/completions", []byte(body), job, ""); e != nil {
				t.Fatalf("round %d: a client that left got an error to write: %v", i, e)
			}
			if n := h.inflight("n1/pool-0"); n != 0 {
				t.Fatalf("round %d: %d in flight after the client left: the slot leaked", i, n)
			}
		}
	})
}
