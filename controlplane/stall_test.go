package controlplane_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/simengine"
)

// wedgedEngine takes connections and requests and never answers: a hung
// llama-server. Its handlers end when the test does.
func wedgedEngine(t *testing.T) (url string, requests func() int) {
	var mu sync.Mutex
	n := 0
	stop := make(chan struct{})
	srv := startEngine(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop) })
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// A wedged engine beside a healthy one: every request is served, the
// first after the stall limit moved it, the later ones at once (the wedged
// pool is quarantined). Before, each hung until its client gave up.
func TestWedgedEngineDoesNotCaptureRequests(t *testing.T) {
	wedged, wedgedRequests := wedgedEngine(t)
	healthy := startSim(t, simengine.Config{TokensPerSecond: 2000, Parallel: 4})
	in := newInference(t, inferenceOpts{stall: 300 * time.Millisecond})
	in.announce("pool-a", wedged, 4, 4, "tiny") // sorts first: the tie-break picks it
	in.announce("pool-b", healthy.URL, 4, 4, "tiny")
	c := testClient(t)
	for i := range 6 {
		begin := time.Now()
		resp, body := post(t, c, in.URL+"/v1/chat/completions", `{"model":"tiny","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "[DONE]") || resp.Header.Get("X-Llorch-Pool") != "local/pool-b" {
			t.Fatalf("request %d: %d %s from %s", i, resp.StatusCode, tail(body), resp.Header.Get("X-Llorch-Pool"))
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("request %d took %v", i, took)
		}
	}
	if n := wedgedRequests(); n != 1 {
		t.Errorf("the wedged engine got %d requests, want 1 (then quarantined)", n)
	}
}

// An engine that stalls mid-stream: the client's stream ends with
// WORKER_RESET within the stall limit, not never.
func TestStalledStreamEndsWithWorkerReset(t *testing.T) {
	stalling := startEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 2 {
			fmt.Fprintf(w, `data: {"choices":[{"index":0,"delta":{"content":" w%d"}}]}`+"\n\n", i)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done() // then nothing, until the control plane gives up
	}))
	in := newInference(t, inferenceOpts{stall: 300 * time.Millisecond})
	in.announce("pool-0", stalling.URL, 1, 1, "tiny")
	begin := time.Now()
	resp, body := post(t, testClient(t), in.URL+"/v1/chat/completions", `{"model":"tiny","stream":true,"max_tokens":40,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "event: error") || !strings.Contains(string(body), "WORKER_RESET") || !strings.Contains(string(body), "sent nothing") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("the stall was noticed after %v", took)
	}
}

// A client that opens a stream and never reads it is dropped after the
// write timeout, and the engine's slot is freed: it holds neither the slot
// nor the control plane's memory for good.
func TestClientThatNeverReadsIsDropped(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1e6, Parallel: 1})
	in := newInference(t, inferenceOpts{write: 300 * time.Millisecond})
	in.announce("pool-0", sim.URL, 1, 1, "tiny")
	conn, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A long answer (much more than the sockets' buffers), never read.
	body := `{"model":"tiny","stream":true,"max_tokens":200000,"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	c := testClient(t)
	clocktest.WaitFor(t, 10*time.Second, "the engine busy with the unread stream", func() bool { return slotsBusy(t, c, sim.URL) == 1 })
	clocktest.WaitFor(t, 10*time.Second, "the slot freed after the write timeout", func() bool {
		return slotsBusy(t, c, sim.URL) == 0 && freeInExplain(t, c, in.URL, "pool-0") == 1
	})
}
