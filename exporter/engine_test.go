package exporter

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/enginepoll"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/simengine"
)

// testEngine is a simulated llama-server behind switches that fail its
// /metrics or /slots with a 503, as an engine that went away would, without
// cutting its streams, or hang its /metrics until the client gives up.
// direct reaches the same engine without the switches, for the test's own
// checks.
type testEngine struct {
	*httptest.Server
	direct                 *httptest.Server
	metricsDown, slotsDown atomic.Bool
	metricsHang            atomic.Bool
}

func newTestEngine(t testing.TB, cfg simengine.Config) *testEngine {
	t.Helper()
	h := simengine.New(cfg).Handler()
	e := &testEngine{direct: httptest.NewServer(h)}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && e.metricsHang.Load() {
			<-r.Context().Done()
			return
		}
		if (r.URL.Path == "/metrics" && e.metricsDown.Load()) || (r.URL.Path == "/slots" && e.slotsDown.Load()) {
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.Close)
	t.Cleanup(e.direct.Close)
	return e
}

// simEngine is a simulated llama-server with --metrics (and /slots, on by
// default).
func simEngine(t testing.TB, parallel int) *testEngine {
	t.Helper()
	return newTestEngine(t, simengine.Config{Parallel: parallel, Metrics: true, TokensPerSecond: 20})
}

// setDown fails both endpoints, or neither.
func (e *testEngine) setDown(down bool) {
	e.metricsDown.Store(down)
	e.slotsDown.Store(down)
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

func TestEnginePollerAndCollectorAgainstSimulator(t *testing.T) {
	live := simEngine(t, 2)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	table := pool.NewTable([]string{"pool-a", "pool-b", "pool-idle"})
	table.Upsert("/run/pool-a_r0.json", handoff.Handoff{PoolID: "pool-a", ReplicaID: "r0", Engine: "llamacpp", URL: live.URL, SlotsTotal: 2, SlotsFree: 2})
	table.Upsert("/run/pool-b_r0.json", handoff.Handoff{PoolID: "pool-b", ReplicaID: "r0", Engine: "llamacpp", URL: dead.URL, SlotsTotal: 4, SlotsFree: 3})
	poller := enginepoll.New(table, table, time.Second)
	reg := prometheus.NewPedanticRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "n1"}, reg).MustRegister(
		New(map[string]Collector{"engine": NewEngineCollector(poller)}, slog.New(slog.DiscardHandler)))

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
	poller.Poll(context.Background())
	compare(`
# HELP llorch_pool_engine_scrape_up 1 if the pool's engine answered /metrics or /slots at the last poll.
# TYPE llorch_pool_engine_scrape_up gauge
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-a"} 1
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-b"} 0
# HELP llorch_pool_engine_endpoint_up 1 if the pool's engine answered this endpoint at the last poll (/slots answers 501 under --no-slots).
# TYPE llorch_pool_engine_endpoint_up gauge
llorch_pool_engine_endpoint_up{endpoint="metrics",node_id="n1",pool_id="pool-a"} 1
llorch_pool_engine_endpoint_up{endpoint="metrics",node_id="n1",pool_id="pool-b"} 0
llorch_pool_engine_endpoint_up{endpoint="slots",node_id="n1",pool_id="pool-a"} 1
llorch_pool_engine_endpoint_up{endpoint="slots",node_id="n1",pool_id="pool-b"} 0
# HELP llorch_pool_requests_deferred Requests waiting for a free slot (llamacpp:requests_deferred).
# TYPE llorch_pool_requests_deferred gauge
llorch_pool_requests_deferred{node_id="n1",pool_id="pool-a"} 0
# HELP llorch_pool_requests_processing Requests the engine is processing (llamacpp:requests_processing).
# TYPE llorch_pool_requests_processing gauge
llorch_pool_requests_processing{node_id="n1",pool_id="pool-a"} 1
# HELP llorch_pool_slots_busy Engine slots processing a request: from /slots, else llamacpp:requests_processing when /slots does not answer.
# TYPE llorch_pool_slots_busy gauge
llorch_pool_slots_busy{node_id="n1",pool_id="pool-a"} 1
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="engine",node_id="n1"} 1
`, "llorch_pool_engine_scrape_up", "llorch_pool_engine_endpoint_up", "llorch_pool_requests_deferred", "llorch_pool_requests_processing",
		"llorch_pool_slots_busy", "llorch_scrape_collector_success")
	// A down engine exports only its scrape_up and endpoint_up; a pool
	// without an engine exports nothing.
	if n, _ := testutil.GatherAndCount(reg, "llorch_pool_tokens_predicted_total", "llorch_pool_prompt_tokens_total", "llorch_pool_prompt_seconds_total"); n != 3 {
		t.Fatalf("%d token counters, want pool-a's three", n)
	}

	// The table's free slots are the engine's live count where it answers,
	// the handoff file's where it does not.
	if p := poolState(t, table, "pool-a"); p.SlotsTotal != 2 || p.SlotsFree != 1 {
		t.Fatalf("pool-a slots %d/%d, want 1 free of 2", p.SlotsFree, p.SlotsTotal)
	}
	if p := poolState(t, table, "pool-b"); p.SlotsTotal != 4 || p.SlotsFree != 3 {
		t.Fatalf("pool-b slots %d/%d, want the handoff's 3 of 4", p.SlotsFree, p.SlotsTotal)
	}
	if st := poller.Stats(); len(st) != 2 || st["pool-a"].SlotsTotal != 2 || st["pool-a"].URL != live.URL || st["pool-b"].Up {
		t.Fatalf("stats = %+v", st)
	}

	// pool-a's engine stops answering while its request runs: the table
	// falls back to the handoff file's slots.
	live.setDown(true)
	poller.Poll(context.Background())
	if p := poolState(t, table, "pool-a"); p.SlotsFree != 2 {
		t.Fatalf("pool-a free slots %d with its engine down, want the handoff's 2", p.SlotsFree)
	}
	compare(`
# HELP llorch_pool_engine_scrape_up 1 if the pool's engine answered /metrics or /slots at the last poll.
# TYPE llorch_pool_engine_scrape_up gauge
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-a"} 0
llorch_pool_engine_scrape_up{node_id="n1",pool_id="pool-b"} 0
`, "llorch_pool_engine_scrape_up")
	if n, _ := testutil.GatherAndCount(reg, "llorch_pool_slots_busy"); n != 0 {
		t.Fatal("slots_busy exported for engines that did not answer")
	}

	// It comes back after the request ended: its tokens are counted.
	stop()
	live.setDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		poller.Poll(context.Background())
		st := poller.Stats()["pool-a"]
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

// startDeferred sends a streamed /completion to an engine whose slots are
// all busy and returns once the engine counts it deferred. stop ends it.
func startDeferred(t *testing.T, e *testEngine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+"/completion",
			strings.NewReader(`{"prompt":"waiting","n_predict":1000,"stream":true}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	stop = func() { cancel(); <-done }
	c := engine.New(e.direct.URL, e.direct.Client())
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m, err := c.Metrics(context.Background()); err == nil && m.RequestsDeferred == 1 {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("the request was never deferred")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// poolSeries gathers reg's llorch_pool_* series of the engine collector as
// "name{labels}" → value, node_id left out.
func poolSeries(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "llorch_pool_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetName() != "node_id" {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
			}
			v := m.GetGauge().GetValue()
			if f.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// TestEnginePollerAndCollectorEndpoints: /metrics and /slots are polled independently;
// each series whose endpoint answered is exported; busy slots come from
// /slots, else from llamacpp:requests_processing; the pool table gets the
// busy and deferred counts dated by the poll, or nothing when neither
// endpoint answered. The engine has one slot busy and one request deferred.
func TestEnginePollerAndCollectorEndpoints(t *testing.T) {
	const counters = "tokens_predicted_total,tokens_predicted_seconds_total,prompt_tokens_total,prompt_seconds_total"
	tests := []struct {
		name                   string
		cfg                    simengine.Config
		metricsDown, slotsDown bool
		metricsHang            bool
		// want is the series other than the four token counters, which
		// are exported exactly when /metrics answers.
		want         map[string]float64
		wantCounters bool
		wantSource   string
		wantLoad     bool // the table gets a dated load
		wantFree     int
		wantDeferred int
	}{
		{
			name: "both endpoints answer: busy from /slots",
			cfg:  simengine.Config{Metrics: true},
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 1,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   1,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
				"llorch_pool_requests_processing{pool_id=p}":                 1,
				"llorch_pool_requests_deferred{pool_id=p}":                   1,
			},
			wantCounters: true, wantSource: enginepoll.BusyFromSlots, wantLoad: true, wantFree: 1, wantDeferred: 1,
		},
		{
			name: "--no-slots: busy from requests_processing",
			cfg:  simengine.Config{Metrics: true, NoSlots: true},
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 1,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   0,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
				"llorch_pool_requests_processing{pool_id=p}":                 1,
				"llorch_pool_requests_deferred{pool_id=p}":                   1,
			},
			wantCounters: true, wantSource: enginepoll.BusyFromMetrics, wantLoad: true, wantFree: 1, wantDeferred: 1,
		},
		{
			name:      "/slots failing: busy from requests_processing",
			cfg:       simengine.Config{Metrics: true},
			slotsDown: true,
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 1,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   0,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
				"llorch_pool_requests_processing{pool_id=p}":                 1,
				"llorch_pool_requests_deferred{pool_id=p}":                   1,
			},
			wantCounters: true, wantSource: enginepoll.BusyFromMetrics, wantLoad: true, wantFree: 1, wantDeferred: 1,
		},
		{
			name:        "/metrics failing: busy from /slots, deferred unknown",
			cfg:         simengine.Config{Metrics: true},
			metricsDown: true,
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 0,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   1,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
			},
			wantSource: enginepoll.BusyFromSlots, wantLoad: true, wantFree: 1, wantDeferred: 0,
		},
		{
			name:        "/metrics hanging past the poll's timeout: busy from /slots",
			cfg:         simengine.Config{Metrics: true},
			metricsHang: true,
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 0,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   1,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
			},
			wantSource: enginepoll.BusyFromSlots, wantLoad: true, wantFree: 1, wantDeferred: 0,
		},
		{
			name: "no --metrics: busy from /slots",
			cfg:  simengine.Config{},
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 0,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   1,
				"llorch_pool_slots_busy{pool_id=p}":                          1,
			},
			wantSource: enginepoll.BusyFromSlots, wantLoad: true, wantFree: 1, wantDeferred: 0,
		},
		{
			name:        "neither answers: the handoff file's counts",
			cfg:         simengine.Config{Metrics: true},
			metricsDown: true, slotsDown: true,
			want: map[string]float64{
				"llorch_pool_engine_scrape_up{pool_id=p}":                    0,
				"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 0,
				"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   0,
			},
			wantFree: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Parallel, cfg.TokensPerSecond = 1, 20
			e := newTestEngine(t, cfg)
			busy := streamCompletion(t, e.direct.URL)
			defer busy()
			if cfg.Metrics {
				defer startDeferred(t, e)()
			}
			e.metricsDown.Store(tt.metricsDown)
			e.slotsDown.Store(tt.slotsDown)
			e.metricsHang.Store(tt.metricsHang)

			// The handoff file says 2 free of 2, and the engine has one
			// slot: its busy count is what the poll must bring.
			table := pool.NewTable(nil)
			table.Upsert("/run/p_r0.json", handoff.Handoff{PoolID: "p", URL: e.URL, SlotsTotal: 2, SlotsFree: 2})
			poller := enginepoll.New(table, table, time.Second)
			reg := prometheus.NewPedanticRegistry()
			prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "n1"}, reg).MustRegister(
				New(map[string]Collector{"engine": NewEngineCollector(poller)}, slog.New(slog.DiscardHandler)))
			before := time.Now()
			poller.Poll(context.Background())

			got := poolSeries(t, reg)
			want := maps.Clone(tt.want)
			for _, c := range strings.Split(counters, ",") {
				name := "llorch_pool_" + c + "{pool_id=p}"
				if v, ok := got[name]; ok != tt.wantCounters {
					t.Errorf("%s exported = %v, want %v", name, ok, tt.wantCounters)
				} else if ok {
					if c != "tokens_predicted_total" && c != "tokens_predicted_seconds_total" && v <= 0 {
						// The busy request's prompt is processed.
						t.Errorf("%s = %v, want > 0", name, v)
					}
					want[name] = v
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("series =\n  %v\nwant\n  %v", got, want)
			}

			st := poller.Stats()["p"]
			if st.BusySource != tt.wantSource {
				t.Errorf("busy source %q, want %q", st.BusySource, tt.wantSource)
			}
			ps := poolState(t, table, "p")
			if ps.SlotsFree != tt.wantFree || ps.RequestsDeferred != tt.wantDeferred {
				t.Errorf("table: %d free, %d deferred; want %d, %d", ps.SlotsFree, ps.RequestsDeferred, tt.wantFree, tt.wantDeferred)
			}
			switch {
			case !tt.wantLoad && !ps.SlotsObservedAt.IsZero():
				t.Errorf("table dated a failed poll %v", ps.SlotsObservedAt)
			case tt.wantLoad && (!ps.SlotsObservedAt.Equal(st.At) || st.At.Before(before)):
				t.Errorf("table observed at %v, want the poll's start %v (after %v)", ps.SlotsObservedAt, st.At, before)
			}
		})
	}
}

// TestEnginePollerAndCollectorPollsEveryReplica: a pool with two replicas has each
// replica's engine polled at its own URL; the table gets each replica's
// load; the pool's series sum the replicas, with no replica label, and
// scrape_up says whether every replica's engine answered.
func TestEnginePollerAndCollectorPollsEveryReplica(t *testing.T) {
	r0, r1 := simEngine(t, 2), simEngine(t, 2)
	table := pool.NewTable([]string{"p"})
	table.Upsert("/run/p_r0.json", handoff.Handoff{PoolID: "p", ReplicaID: "r0", URL: r0.URL, SlotsTotal: 2, SlotsFree: 2})
	table.Upsert("/run/p_r1.json", handoff.Handoff{PoolID: "p", ReplicaID: "r1", URL: r1.URL, SlotsTotal: 2, SlotsFree: 2})
	poller := enginepoll.New(table, table, time.Second)
	reg := prometheus.NewPedanticRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "n1"}, reg).MustRegister(
		New(map[string]Collector{"engine": NewEngineCollector(poller)}, slog.New(slog.DiscardHandler)))

	// r1's engine runs two requests, r0's one.
	defer streamCompletion(t, r0.direct.URL)()
	defer streamCompletion(t, r1.direct.URL)()
	defer streamCompletion(t, r1.direct.URL)()
	poller.Poll(context.Background())

	rs := poller.ReplicaStats()["p"]
	if len(rs) != 2 || rs[0].ReplicaID != "r0" || rs[0].URL != r0.URL || rs[1].ReplicaID != "r1" || rs[1].URL != r1.URL {
		t.Fatalf("replica stats = %+v, want r0 at %s and r1 at %s", rs, r0.URL, r1.URL)
	}
	if rs[0].SlotsBusy != 1 || rs[1].SlotsBusy != 2 {
		t.Fatalf("busy slots r0 %d, r1 %d; want 1 and 2", rs[0].SlotsBusy, rs[1].SlotsBusy)
	}
	p := poolState(t, table, "p")
	if p.SlotsTotal != 4 || p.SlotsFree != 1 || len(p.Replicas) != 2 || p.Replicas[0].SlotsFree != 1 || p.Replicas[1].SlotsFree != 0 ||
		p.Replicas[0].SlotsObservedAt.IsZero() || p.Replicas[1].SlotsObservedAt.IsZero() || p.SlotsObservedAt.IsZero() {
		t.Fatalf("table = %+v, want r0 1 free and r1 0 free, both polled", p)
	}
	got := poolSeries(t, reg)
	for name, want := range map[string]float64{
		"llorch_pool_engine_scrape_up{pool_id=p}":                    1,
		"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 1,
		"llorch_pool_engine_endpoint_up{endpoint=slots,pool_id=p}":   1,
		"llorch_pool_slots_busy{pool_id=p}":                          3,
		"llorch_pool_requests_processing{pool_id=p}":                 3,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	for name := range got {
		if strings.Contains(name, "replica") {
			t.Errorf("%s: the pool's series carry no replica label", name)
		}
	}

	// r1's engine stops answering: r1 falls back to its file, r0 keeps its
	// poll; the pool's scrape_up is 0, its sums are r0's.
	r1.setDown(true)
	poller.Poll(context.Background())
	p = poolState(t, table, "p")
	if p.Replicas[0].SlotsFree != 1 || p.Replicas[1].SlotsFree != 2 || !p.Replicas[1].SlotsObservedAt.IsZero() || !p.SlotsObservedAt.IsZero() {
		t.Fatalf("table with r1 down = %+v", p)
	}
	got = poolSeries(t, reg)
	for name, want := range map[string]float64{
		"llorch_pool_engine_scrape_up{pool_id=p}":                    0,
		"llorch_pool_engine_endpoint_up{endpoint=metrics,pool_id=p}": 0,
		"llorch_pool_slots_busy{pool_id=p}":                          1,
		"llorch_pool_requests_processing{pool_id=p}":                 1,
	} {
		if got[name] != want {
			t.Errorf("with r1 down: %s = %v, want %v", name, got[name], want)
		}
	}

	// r1's file goes: only r0 is polled.
	table.Remove("/run/p_r1.json")
	poller.Poll(context.Background())
	if rs := poller.ReplicaStats()["p"]; len(rs) != 1 || rs[0].ReplicaID != "r0" {
		t.Fatalf("after r1's removal: %+v", rs)
	}
	if got := poolSeries(t, reg)["llorch_pool_engine_scrape_up{pool_id=p}"]; got != 1 {
		t.Errorf("scrape_up after r1's removal = %v, want 1", got)
	}
}
