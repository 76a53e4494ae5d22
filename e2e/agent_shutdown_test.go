//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

// engineProcessing reads an engine's llamacpp:requests_processing; -1 when
// it does not answer.
func engineProcessing(url string) int {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "llamacpp:requests_processing %d", &n); err == nil {
			return n
		}
	}
	return -1
}

// TestSIGTERMDrainsTheAgent: SIGTERM to pool-managerd while two tasks
// stream through the control plane from its engine. The node turns
// draining at once; both streams finish with `end` and every token; then
// the node deregisters, the engine it started is gone, and the agent exits
// 0.
func TestSIGTERMDrainsTheAgent(t *testing.T) {
	f := startFleet(t, 1, 2, "20")
	a := f.agents["node-1"]
	h, ok := readHandoff(a.runtimeDir, "pool-0")
	if !ok || !alive(h.PID) {
		t.Fatalf("no running engine announced in %s", a.runtimeDir)
	}

	// 60 tokens at 20 tokens/s: about 3 s each.
	const tokens = 60
	type result struct {
		evs   []taskEvent
		ended time.Time
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i := range results {
		id := fmt.Sprintf("drain-%d", i)
		if code, _, body := f.submit(t, fmt.Sprintf(`{"task_id":%q,"prompt":"Once upon a time","max_tokens":%d}`, id, tokens)); code != http.StatusAccepted {
			t.Fatalf("submit %s: %d %s", id, code, body)
		}
		wg.Go(func() {
			results[i].evs = f.events(t, id)
			results[i].ended = time.Now()
		})
	}
	waitFor(t, 10*time.Second, "both tasks streaming from the engine", func() bool { return engineProcessing(h.URL) == 2 })

	sigterm := time.Now()
	a.signal(t, syscall.SIGTERM)
	waitFor(t, 2*time.Second, "node-1 draining in the control plane", func() bool {
		return nodes(f.client, true)["node-1"].Status == api.StatusDraining
	})
	exited := make(chan int, 1)
	go func() { exited <- a.wait(t, 60*time.Second) }()
	wg.Wait()
	for i, r := range results {
		n := len(r.evs)
		if n == 0 || r.evs[n-1].Type != "end" || r.evs[n-1].Data["tokens_out"] != float64(tokens) {
			t.Errorf("drain-%d after SIGTERM: %s (last %v), want every token and end", i, types(r.evs), r.evs[n-1:])
		}
	}
	code := <-exited
	exitedAt := time.Now()
	if code != 0 {
		t.Fatalf("pool-managerd exited %d after SIGTERM, want 0", code)
	}
	for i, r := range results {
		if r.ended.After(exitedAt) {
			t.Errorf("drain-%d ended after the agent exited", i)
		}
	}
	t.Logf("SIGTERM -> streams done %v, agent exited %v", maxEnded(results[0].ended, results[1].ended).Sub(sigterm).Round(time.Millisecond),
		exitedAt.Sub(sigterm).Round(time.Millisecond))
	if _, ok := nodes(f.client, true)["node-1"]; ok {
		t.Error("node-1 still registered after its agent exited")
	}
	if alive(h.PID) {
		t.Errorf("engine pid %d outlived its agent", h.PID)
	}
	if out := a.out.String(); !strings.Contains(out, "deregistered from control plane") || !strings.Contains(out, "in-flight requests done") {
		t.Errorf("agent log lacks the drain and the deregistration:\n%s", out)
	}
}

func maxEnded(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestDrainDeadlineStopsTheEngine: POST /pools/{id}/drain with deadline_ms
// while a long task streams from the pool's engine: the pool takes no new
// work at once; at the deadline its engine process is stopped, the task's
// client sees its stream end with an error event, and the pool says
// stopped.
func TestDrainDeadlineStopsTheEngine(t *testing.T) {
	f := startFleet(t, 1, 2, "20")
	a := f.agents["node-1"]
	h, ok := readHandoff(a.runtimeDir, "pool-0")
	if !ok || !alive(h.PID) {
		t.Fatalf("no running engine announced in %s", a.runtimeDir)
	}
	if code, _, body := f.submit(t, `{"task_id":"long","prompt":"Once upon a time","max_tokens":2000}`); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	var evs []taskEvent
	done := make(chan struct{})
	go func() { defer close(done); evs = f.events(t, "long") }()
	waitFor(t, 10*time.Second, "the task streaming from the engine", func() bool { return engineProcessing(h.URL) == 1 })

	const deadline = time.Second
	drained := time.Now()
	resp, err := http.Post(a.url+"/pools/pool-0/drain", "application/json", strings.NewReader(fmt.Sprintf(`{"deadline_ms":%d}`, deadline.Milliseconds())))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("drain: %d", resp.StatusCode)
	}
	waitFor(t, 2*time.Second, "pool-0 draining in the control plane", func() bool {
		p, ok := poolState(f.client, "node-1", "pool-0")
		return ok && p.Draining
	})
	<-done
	cut := time.Since(drained)
	if n := len(evs); n == 0 || evs[n-1].Type != "error" {
		t.Fatalf("task after the drain deadline: %s, want its stream to end with an error event", types(evs))
	}
	t.Logf("drain (deadline %v) -> stream cut after %v: %v", deadline, cut.Round(time.Millisecond), evs[len(evs)-1].Data)
	if cut < deadline {
		t.Errorf("stream cut %v after the drain, before its %v deadline", cut, deadline)
	}
	waitFor(t, 5*time.Second, "pool-0 stopped", func() bool {
		st := poolStatus(t, a.url, "pool-0")
		return st.Stopped && st.Draining && !st.Live
	})
	if alive(h.PID) {
		t.Errorf("engine pid %d alive after the drain deadline", h.PID)
	}
}
