package utilization

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
)

// sample is one element of an instant vector.
type sample struct {
	labels map[string]string
	at     time.Time
	value  float64
}

// fakeProm answers /api/v1/query with a vector per query string, or with
// the error set by fail.
type fakeProm struct {
	srv *httptest.Server
	mu  sync.Mutex
	res map[string][]sample
	// errStatus, if set, answers every query (or only failQuery, if set)
	// with a Prometheus error.
	errStatus int
	failQuery string
	// matrix answers with a matrix instead of a vector.
	matrix  bool
	queries []string
}

func newFakeProm(t *testing.T, res map[string][]sample) *fakeProm {
	f := &fakeProm{res: res}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeProm) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/api/v1/query" || r.ParseForm() != nil {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"not_found","error":"not found"}`))
		return
	}
	q := r.Form.Get("query")
	f.queries = append(f.queries, q)
	if f.errStatus != 0 && (f.failQuery == "" || f.failQuery == q) {
		w.WriteHeader(f.errStatus)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"execution","error":"query timed out in expression evaluation"}`))
		return
	}
	if f.matrix {
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"matrix","result":[]}}`))
		return
	}
	type elem struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	result := []elem{}
	for _, s := range f.res[q] {
		ts := float64(s.at.UnixMilli()) / 1e3
		result = append(result, elem{Metric: s.labels, Value: [2]any{ts, fmt.Sprint(s.value)}})
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status": "success",
		"data":   map[string]any{"resultType": "vector", "result": result},
	})
}

func (f *fakeProm) set(fn func(f *fakeProm)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// fleetSeries is what Prometheus holds for two nodes: a as the agent
// scrape above (its GPU series a second older than its pool series), b
// with one pool and one GPU.
func fleetSeries() map[string][]sample {
	pool := func(node, pool string, at time.Time, v float64) sample {
		return sample{labels: map[string]string{"__name__": "x", "node_id": node, "pool_id": pool, "instance": node + ":9400"}, at: at, value: v}
	}
	gpu := func(node, idx string, at time.Time, v float64) sample {
		return sample{labels: map[string]string{"node_id": node, "gpu": idx, "uuid": "GPU-" + idx}, at: at, value: v}
	}
	ta, tg, tb := t0, t0.Add(-time.Second), t0.Add(-30*time.Second)
	return map[string][]sample{
		"llorch_pool_requests_deferred": {pool("a", "pool-0", ta, 3), pool("a", "pool-1", ta, 0), pool("b", "pool-0", tb, 1)},
		"llorch_pool_requests_processing": {
			pool("a", "pool-0", ta, 4), pool("a", "pool-1", ta, 1), pool("b", "pool-0", tb, 2),
			// No node_id: not an agent's series; ignored.
			{labels: map[string]string{"pool_id": "pool-0"}, at: ta, value: 99},
		},
		"llorch_pool_vram_free_bytes":                {pool("a", "pool-0", ta, gpu0Free), pool("b", "pool-0", tb, 5e9)},
		"llorch_pool_tokens_predicted_total":         {pool("a", "pool-0", ta, 9640), pool("a", "pool-1", ta, 0), pool("b", "pool-0", tb, 300)},
		"llorch_pool_tokens_predicted_seconds_total": {pool("a", "pool-0", ta, 120.5), pool("a", "pool-1", ta, 0), pool("b", "pool-0", tb, 10)},
		"llorch_gpu_utilization_ratio": {
			gpu("a", "0", tg, 0.75), gpu("a", "1", tg, 0.25), gpu("b", "0", tb, 1),
			gpu("a", "GPU-x", tg, 1), // no index: ignored
		},
		"llorch_gpu_memory_free_bytes": {gpu("a", "0", tg, gpu0Free), gpu("a", "1", tg, gpu1Free), gpu("b", "0", tb, 5e9)},
	}
}

func TestPromQL(t *testing.T) {
	f := newFakeProm(t, fleetSeries())
	p, err := NewPromQL(f.srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if u := p.Get("a", "pool-0", ""); !u.At.IsZero() {
		t.Errorf("before a refresh: %+v, want none", u)
	}
	if err := p.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p.Err() != nil || testutil.ToFloat64(p) != 1 {
		t.Errorf("Err() = %v, llorch_utilization_promql_up %v after a good refresh", p.Err(), testutil.ToFloat64(p))
	}
	f.mu.Lock()
	if len(f.queries) != len(queries)+1 || f.queries[len(f.queries)-1] != ageQuery {
		t.Errorf("%d queries, want %d and the age query last: %v", len(f.queries), len(queries)+1, f.queries)
	}
	f.mu.Unlock()

	nan := math.NaN()
	// a's reading is as old as its oldest sample (the GPU series).
	ta := t0.Add(-time.Second)
	cases := []struct {
		node, pool, mask string
		want             scheduler.Utilization
	}{
		{"a", "pool-0", "", scheduler.Utilization{At: ta, GPUUtilization: 0.5, FreeVRAMBytes: gpu0Free, RequestsDeferred: 3, RequestsProcessing: 4, TokenRate: 80}},
		{"a", "pool-0", "0", scheduler.Utilization{At: ta, GPUUtilization: 0.75, FreeVRAMBytes: gpu0Free, RequestsDeferred: 3, RequestsProcessing: 4, TokenRate: 80}},
		{"a", "pool-1", "1", scheduler.Utilization{At: ta, GPUUtilization: 0.25, FreeVRAMBytes: gpu1Free, RequestsProcessing: 1, TokenRate: nan}},
		{"b", "pool-0", "", scheduler.Utilization{At: t0.Add(-30 * time.Second), GPUUtilization: 1, FreeVRAMBytes: 5e9, RequestsDeferred: 1, RequestsProcessing: 2, TokenRate: 30}},
		{"b", "pool-1", "", scheduler.Utilization{}},
		{"c", "pool-0", "", scheduler.Utilization{}},
	}
	for _, tc := range cases {
		if got := p.Get(tc.node, tc.pool, tc.mask); !sameUtil(got, tc.want) {
			t.Errorf("%s %s mask %q:\n got %+v\nwant %+v", tc.node, tc.pool, tc.mask, got, tc.want)
		}
	}
	// b's samples are 30s old: placement ignores them.
	st := &scheduler.State{Now: t0, StaleAfter: 15 * time.Second}
	if !st.Fresh(p.Get("a", "pool-0", "")) || st.Fresh(p.Get("b", "pool-0", "")) {
		t.Error("want a fresh and b stale at t0 with a 15s bound")
	}

	// Prometheus fails: Err says so, and the last snapshot stays (to age).
	f.set(func(f *fakeProm) { f.errStatus = http.StatusUnprocessableEntity })
	err = p.Refresh(t.Context())
	if err == nil || !strings.Contains(err.Error(), "query timed out") {
		t.Errorf("Refresh = %v, want the Prometheus error", err)
	}
	if p.Err() == nil || p.Err().Error() != err.Error() || testutil.ToFloat64(p) != 0 {
		t.Errorf("Err() = %v, want %v; llorch_utilization_promql_up %v, want 0", p.Err(), err, testutil.ToFloat64(p))
	}
	if u := p.Get("a", "pool-0", ""); !u.At.Equal(ta) {
		t.Errorf("after a failed refresh: %+v, want the last snapshot", u)
	}

	// Not a vector: an error too.
	f.set(func(f *fakeProm) { f.errStatus, f.matrix = 0, true })
	if err := p.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "want a vector") || p.Err() == nil {
		t.Errorf("matrix answer: Refresh = %v, Err() = %v", err, p.Err())
	}

	// Recovery clears Err and replaces the snapshot: b's series are gone.
	f.set(func(f *fakeProm) {
		f.matrix = false
		for q, ss := range f.res {
			var keep []sample
			for _, s := range ss {
				if s.labels["node_id"] != "b" {
					keep = append(keep, s)
				}
			}
			f.res[q] = keep
		}
	})
	if err := p.Refresh(t.Context()); err != nil || p.Err() != nil {
		t.Fatalf("Refresh = %v, Err() = %v", err, p.Err())
	}
	if u := p.Get("b", "pool-0", ""); !u.At.IsZero() {
		t.Errorf("b after its series went: %+v, want none", u)
	}
	if u := p.Get("a", "pool-0", ""); u.RequestsProcessing != 4 {
		t.Errorf("a after recovery: %+v", u)
	}
}

func TestPromQLRun(t *testing.T) {
	f := newFakeProm(t, fleetSeries())
	f.set(func(f *fakeProm) { f.errStatus = http.StatusBadRequest })
	p, err := NewPromQL(f.srv.URL, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx, slog.New(slog.DiscardHandler)); close(done) }()
	clocktest.WaitFor(t, 5*time.Second, "a failing query", func() bool { return p.Err() != nil })
	f.set(func(f *fakeProm) { f.errStatus = 0 })
	clocktest.WaitFor(t, 5*time.Second, "readings after recovery", func() bool { return p.Err() == nil && !p.Get("a", "pool-0", "").At.IsZero() })
	cancel()
	<-done
}

func TestNewPromQLBadURL(t *testing.T) {
	if _, err := NewPromQL("://nope", time.Second); err == nil {
		t.Error("NewPromQL accepted a malformed URL")
	}
}

// TestPromQLSampleAge: like a real Prometheus, the fake stamps every
// instant-query result with the evaluation time; the readings are dated by
// the age query's sample times instead.
func TestPromQLSampleAge(t *testing.T) {
	res := fleetSeries()
	for q, ss := range res {
		for i := range ss {
			ss[i].at = t0
		}
		res[q] = ss
	}
	age := func(node string, at time.Time) sample {
		return sample{labels: map[string]string{"node_id": node}, at: t0, value: float64(at.UnixMilli()) / 1e3}
	}
	res[ageQuery] = []sample{
		age("a", t0.Add(-2*time.Second)),
		age("b", t0.Add(-40*time.Second)),
		age("gone", t0.Add(-time.Hour)), // no readings: ignored
		{labels: map[string]string{"node_id": "a"}, at: t0, value: math.NaN()},
	}
	f := newFakeProm(t, res)
	p, err := NewPromQL(f.srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string]time.Time{"a": t0.Add(-2 * time.Second), "b": t0.Add(-40 * time.Second), "gone": {}} {
		if got := p.Get(node, "pool-0", "").At; !got.Equal(want) {
			t.Errorf("%s At = %v, want %v", node, got, want)
		}
	}
	st := &scheduler.State{Now: t0, StaleAfter: 15 * time.Second}
	if st.Fresh(p.Get("b", "pool-0", "")) {
		t.Error("b's 40s-old samples read as fresh")
	}

	// A failing age query fails the refresh.
	f.set(func(f *fakeProm) { f.errStatus, f.failQuery = http.StatusServiceUnavailable, ageQuery })
	if err := p.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "timestamp(") || p.Err() == nil {
		t.Errorf("Refresh = %v with the age query failing", err)
	}
	if got := p.Get("b", "pool-0", "").At; !got.Equal(t0.Add(-40 * time.Second)) {
		t.Errorf("b At = %v after a failed refresh, want the last snapshot's", got)
	}
}
