package exporter

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/simengine"
)

// simEngine serves a simulated llama-server with --metrics --slots. While
// down is set it answers /metrics and /slots 503, as an engine that went
// away would fail them, without cutting its streams.
func simEngine(t testing.TB, parallel int) (*httptest.Server, *atomic.Bool) {
	t.Helper()
	sim := simengine.New(simengine.Config{Parallel: parallel, Metrics: true, Slots: true, TokensPerSecond: 20})
	h := sim.Handler()
	down := &atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() && (r.URL.Path == "/metrics" || r.URL.Path == "/slots") {
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, down
}

// streamCompletion starts a long streamed /completion and returns once its
// first token arrived: a slot is then processing. cancel ends it.
func streamCompletion(t *testing.T, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/completion",
		strings.NewReader(`{"prompt":"once upon a time","n_predict":1000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop = func() {
		cancel()
		resp.Body.Close()
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			stop()
			t.Fatalf("stream ended before its first token: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			return stop
		}
	}
}

func poolState(t *testing.T, table *pool.Table, id string) api.PoolState {
	t.Helper()
	for _, p := range table.Snapshot() {
		if p.PoolID == id {
			return p
		}
	}
	t.Fatalf("no pool %s", id)
	return api.PoolState{}
}

func TestEngineScraperAgainstSimulator(t *testing.T) {
	live, liveDown := simEngine(t, 2)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	table := pool.NewTable([]string{"pool-a", "pool-b", "pool-idle"})
	table.Upsert("/run/pool-a_r0.json", handoff.Handoff{PoolID: "pool-a", ReplicaID: "r0", Engine: "llamacpp", URL: live.URL, SlotsTotal: 2, SlotsFree: 2})
	table.Upsert("/run/pool-b_r0.json", handoff.Handoff{PoolID: "pool-b", ReplicaID: "r0", Engine: "llamacpp", URL: dead.URL, SlotsTotal: 4, SlotsFree: 3})
	scraper := NewEngineScraper(table, table, time.Second)
	reg := prometheus.NewPedanticRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "n1"}, reg).MustRegister(
		New(map[string]Collector{"engine": NewEngineCollector(scraper)}, slog.New(slog.DiscardHandler)))

	// Before the first poll there is nothing to say, which is no failure.
	if n, err := testutil.GatherAndCount(reg, "llorch_pool_engine_scrape_up"); err != nil || n != 0 {
		t.Fatalf("%d engine series before a poll (%v)", n, err)
	}
	compare := func(want string, names ...string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
			t.Fatal(err)
		}
	}
	compare(`
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="engine",node_id="n1"} 1
`, "llorch_scrape_collector_success")

	stop := streamCompletion(t, live.URL)
	defer stop()
	scraper.Poll(context.Background())
	compare(`
# HELP llorch_pool_engine_scrape_up 1 if the pool's engine answered /metrics and /slots at the last poll.
# TYPE llorch_pool_engine_scrape_up gauge
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-a"} 1
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-b"} 0
# HELP llorch_pool_requests_deferred Requests waiting for a free slot (llamacpp:requests_deferred).
# TYPE llorch_pool_requests_deferred gauge
llorch_pool_requests_deferred{node_id="n1",pool_id="pool-a"} 0
# HELP llorch_pool_requests_processing Requests the engine is processing (llamacpp:requests_processing).
# TYPE llorch_pool_requests_processing gauge
llorch_pool_requests_processing{node_id="n1",pool_id="pool-a"} 1
# HELP llorch_pool_slots_busy Engine slots processing a request (from /slots).
# TYPE llorch_pool_slots_busy gauge
llorch_pool_slots_busy{node_id="n1",pool_id="pool-a"} 1
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="engine",node_id="n1"} 1
`, "llorch_pool_engine_scrape_up", "llorch_pool_requests_deferred", "llorch_pool_requests_processing",
		"llorch_pool_slots_busy", "llorch_scrape_collector_success")
	// A down engine exports only its scrape_up; a pool without an engine
	// exports nothing.
	if n, _ := testutil.GatherAndCount(reg, "llorch_pool_tokens_predicted_total", "llorch_pool_prompt_tokens_total"); n != 2 {
		t.Fatalf("%d token counters, want pool-a's two", n)
	}

	// The table's free slots are the engine's live count where it answers,
	// the handoff file's where it does not.
	if p := poolState(t, table, "pool-a"); p.SlotsTotal != 2 || p.SlotsFree != 1 {
		t.Fatalf("pool-a slots %d/%d, want 1 free of 2", p.SlotsFree, p.SlotsTotal)
	}
	if p := poolState(t, table, "pool-b"); p.SlotsTotal != 4 || p.SlotsFree != 3 {
		t.Fatalf("pool-b slots %d/%d, want the handoff's 3 of 4", p.SlotsFree, p.SlotsTotal)
	}
	if st := scraper.Stats(); len(st) != 2 || st["pool-a"].SlotsTotal != 2 || st["pool-a"].URL != live.URL || st["pool-b"].Up {
		t.Fatalf("stats = %+v", st)
	}

	// pool-a's engine stops answering while its request runs: the table
	// falls back to the handoff file's slots.
	liveDown.Store(true)
	scraper.Poll(context.Background())
	if p := poolState(t, table, "pool-a"); p.SlotsFree != 2 {
		t.Fatalf("pool-a free slots %d with its engine down, want the handoff's 2", p.SlotsFree)
	}
	compare(`
# HELP llorch_pool_engine_scrape_up 1 if the pool's engine answered /metrics and /slots at the last poll.
# TYPE llorch_pool_engine_scrape_up gauge
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-a"} 0
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-b"} 0
`, "llorch_pool_engine_scrape_up")
	if n, _ := testutil.GatherAndCount(reg, "llorch_pool_slots_busy"); n != 0 {
		t.Fatal("slots_busy exported for engines that did not answer")
	}

	// It comes back after the request ended: its tokens are counted.
	stop()
	liveDown.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		scraper.Poll(context.Background())
		st := scraper.Stats()["pool-a"]
		if st.Up && st.SlotsBusy == 0 && st.TokensPredictedTotal > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool-a after its request ended: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := poolState(t, table, "pool-a"); p.SlotsFree != 2 {
		t.Fatalf("pool-a free slots %d when idle, want 2", p.SlotsFree)
	}
}

// TestEngineScraperRunStops: Run polls at once and stops with its context.
func TestEngineScraperRunStops(t *testing.T) {
	live, _ := simEngine(t, 1)
	table := pool.NewTable(nil)
	table.Upsert("/run/p_r0.json", handoff.Handoff{PoolID: "p", URL: live.URL, SlotsTotal: 1, SlotsFree: 1})
	scraper := NewEngineScraper(table, nil, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		scraper.Run(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !scraper.Stats()["p"].Up {
		if time.Now().After(deadline) {
			t.Fatal("Run never polled the engine")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}
