package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/simengine"
)

// The placement-quality benchmark (make bench-placement) runs one open-loop
// load against one heterogeneous simulated fleet under three policies, same
// arrivals (same seed), one after the other:
//   - round-robin: pools in turn, no regard for load; busy engines defer;
//   - fewest-busy-slots: what Paddler does — the pool with the most free
//     slots, tasks waiting in the control plane when all are busy; no
//     regard for speed or memory;
//   - llorch: the default scorers and filters.
// The fleet: one fast node (200 tokens/s per slot), two slow ones (50), and
// one nearly out of VRAM, whose engine pages and crawls (10 tokens/s) —
// tasks need 1 GiB free, it has 0.5 GiB. Each has 4 slots. Tasks generate
// 32 tokens. Arrivals are Poisson at 80 % of the fleet's capacity.

type simNode struct {
	id        string
	tps       float64
	vramFree  uint64
	vramTotal uint64
}

var qualityFleet = []simNode{
	{"fast", 200, 60 << 30, 80 << 30},
	{"slow-a", 50, 60 << 30, 80 << 30},
	{"slow-b", 50, 60 << 30, 80 << 30},
	{"starved", 10, 512 << 20, 80 << 30},
}

const (
	qualitySlots  = 4
	qualityTokens = 32
	qualityLoad   = 0.8
)

// staticFleet reports every pool as its last heartbeat would: ready, all
// slots free. The dispatcher's own in-flight count corrects it, as between
// real heartbeats.
type staticFleet struct{ cands []scheduler.Candidate }

func (f staticFleet) Candidates() []scheduler.Candidate { return slices.Clone(f.cands) }

// engineMetrics is the utilisation source: each engine's /metrics, polled.
type engineMetrics struct {
	mu   sync.Mutex
	util map[string]scheduler.Utilization
}

func (e *engineMetrics) Get(node, _, _ string) scheduler.Utilization {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.util[node]
}

func (e *engineMetrics) poll(ctx context.Context, urls map[string]string) {
	client := &http.Client{Timeout: time.Second}
	for ctx.Err() == nil {
		for node, url := range urls {
			m, err := engine.New(url, client).Metrics(ctx)
			if err != nil {
				continue
			}
			u := scheduler.Utilization{At: time.Now(), GPUUtilization: math.NaN(), FreeVRAMBytes: math.NaN(),
				RequestsProcessing: m.RequestsProcessing, RequestsDeferred: m.RequestsDeferred, TokenRate: math.NaN()}
			if m.PredictedSeconds > 0 {
				u.TokenRate = m.TokensPredictedTotal / m.PredictedSeconds
			}
			e.mu.Lock()
			e.util[node] = u
			e.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fewestBusy is Paddler's policy as a framework: ready pools serving the
// model, the one with the most free slots.
func fewestBusy(opts scheduler.Options) (*scheduler.Framework, error) {
	filters := []scheduler.FilterPlugin{scheduler.Ready{}, scheduler.Model{}}
	if opts.RequireFreeSlot {
		filters = append(filters, scheduler.Capacity{})
	}
	return scheduler.NewFramework(filters, []scheduler.WeightedScorer{{Plugin: scheduler.FreeSlots{}, Weight: 1}}, opts.StaleAfter)
}

type result struct {
	policy    string
	ttft      []time.Duration // per arrival; -1: no first token by the end
	latency   []time.Duration // arrival to last token; -1: not completed
	completed int
	tokens    int64
	elapsed   time.Duration
}

func (r *result) pct(p float64) time.Duration { return percentile(r.ttft, p) }

func percentile(v []time.Duration, p float64) time.Duration {
	s := slices.Clone(v)
	for i, v := range s {
		if v < 0 {
			s[i] = time.Duration(math.MaxInt64) // never started: worse than any
		}
	}
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

func fmtDur(d time.Duration) string {
	if d == time.Duration(math.MaxInt64) {
		return "never"
	}
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func BenchmarkPlacementQuality(b *testing.B) {
	window := 15 * time.Second
	if v := os.Getenv("LLORCH_BENCH_SECONDS"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		window = time.Duration(s) * time.Second
	}
	capacity := 0.0
	for _, n := range qualityFleet {
		capacity += qualitySlots * n.tps / qualityTokens
	}
	rate := qualityLoad * capacity
	var results []*result
	for _, policy := range []string{"round-robin", "fewest-busy-slots", "llorch"} {
		b.Run(policy, func(b *testing.B) {
			for b.Loop() {
				r := runQuality(b, policy, rate, window)
				results = append(results, r)
				b.ReportMetric(float64(r.pct(0.5).Microseconds())/1000, "p50-ttft-ms")
				b.ReportMetric(float64(r.pct(0.99).Microseconds())/1000, "p99-ttft-ms")
				b.ReportMetric(float64(percentile(r.latency, 0.99).Microseconds())/1000, "p99-latency-ms")
				b.ReportMetric(float64(r.completed)/r.elapsed.Seconds(), "completed/s")
				b.ReportMetric(float64(r.tokens)/r.elapsed.Seconds(), "tokens/s")
			}
		})
	}
	if len(results) != 3 {
		return
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\nopen-loop load %.1f tasks/s (%.0f %% of %.2f), %v, %d tasks each, same arrivals\n", rate, qualityLoad*100, capacity, window, len(results[0].ttft))
	fmt.Fprintf(&t, "| policy | p50 TTFT ms | p99 TTFT ms | p50 latency ms | p99 latency ms | completed | tokens/s |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&t, "| %s | %s | %s | %s | %s | %d/%d | %.0f |\n", r.policy, fmtDur(r.pct(0.5)), fmtDur(r.pct(0.99)),
			fmtDur(percentile(r.latency, 0.5)), fmtDur(percentile(r.latency, 0.99)), r.completed, len(r.ttft), float64(r.tokens)/r.elapsed.Seconds())
	}
	rr, ll := results[0], results[2]
	never := 0
	for _, v := range rr.ttft {
		if v < 0 {
			never++
		}
	}
	if never > 0 {
		fmt.Fprintf(&t, "round-robin: %d of %d tasks (%.0f %%) never got a first token within the run; llorch p99 TTFT %s ms\n",
			never, len(rr.ttft), 100*float64(never)/float64(len(rr.ttft)), fmtDur(ll.pct(0.99)))
	} else {
		fmt.Fprintf(&t, "p99 TTFT round-robin / llorch: %.1fx\n", float64(rr.pct(0.99))/float64(ll.pct(0.99)))
	}
	fmt.Print(t.String()) // the table is the benchmark's report
}

// runQuality starts a fresh fleet, offers the same Poisson arrivals for
// window, then waits up to window/2 for stragglers.
func runQuality(b *testing.B, policy string, rate float64, window time.Duration) *result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urls := map[string]string{}
	var cands []scheduler.Candidate
	for _, n := range qualityFleet {
		srv := httptest.NewServer(simengine.New(simengine.Config{
			Model: "m.gguf", Parallel: qualitySlots, CtxSize: 4096, Metrics: true, Slots: true,
			TokensPerSecond: n.tps, PromptTokensPerSecond: 2000,
		}).Handler())
		defer srv.Close()
		urls[n.id] = srv.URL
		cands = append(cands, scheduler.Candidate{NodeID: n.id, NodeStatus: api.StatusOnline, Pool: api.PoolState{
			PoolID: "pool-0", Ready: true, SlotsTotal: qualitySlots, SlotsFree: qualitySlots, URL: srv.URL,
			Models: []string{"m.gguf"}, VRAMTotalBytes: n.vramTotal, VRAMFreeBytes: n.vramFree,
		}})
	}
	metrics := &engineMetrics{util: map[string]scheduler.Utilization{}}
	go metrics.poll(ctx, urls)

	var d *dispatch.Dispatcher
	if policy != "round-robin" {
		opts := dispatch.Options{Fleet: staticFleet{cands}, Util: metrics, Queue: admission.New(100000, admission.Reject),
			Scheduling: scheduler.Options{StaleAfter: 2 * time.Second, Quarantine: 30 * time.Second}}
		if policy == "fewest-busy-slots" {
			opts.Policy = fewestBusy
		}
		var err error
		if d, err = dispatch.New(opts); err != nil {
			b.Fatal(err)
		}
		go d.Run(ctx)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	rng := rand.New(rand.NewPCG(2026, 11))
	res := &result{policy: policy}
	var mu sync.Mutex
	var tokens atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	next := begin
	for i := 0; ; i++ {
		next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		if next.Sub(begin) > window {
			break
		}
		time.Sleep(time.Until(next))
		res.ttft = append(res.ttft, -1)
		res.latency = append(res.latency, -1)
		wg.Add(1)
		go func(i int, arrived time.Time) {
			defer wg.Done()
			ttft, n, err := runTask(ctx, d, cands, client, i, arrived)
			mu.Lock()
			defer mu.Unlock()
			if ttft > 0 {
				res.ttft[i] = ttft
			}
			tokens.Add(int64(n))
			if err == nil {
				res.completed++
				res.latency[i] = time.Since(arrived)
			}
		}(i, next)
	}
	// Stragglers get half a window more; whatever has not started by then
	// counts as never started.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(window / 2):
		cancel()
		<-done
	}
	res.elapsed = time.Since(begin)
	res.tokens = tokens.Load()
	return res
}

var rrNext atomic.Uint64

// runTask runs one task under the policy and returns its time to first
// token from arrival.
func runTask(ctx context.Context, d *dispatch.Dispatcher, cands []scheduler.Candidate, client *http.Client, i int, arrived time.Time) (time.Duration, int, error) {
	var url string
	var placement dispatch.Placement
	if d == nil {
		url = cands[rrNext.Add(1)%uint64(len(cands))].Pool.URL
	} else {
		j := dispatch.NewJob(fmt.Sprintf("t%d", i), admission.Interactive,
			scheduler.Request{Model: "m.gguf", VRAMBytes: 1 << 30, Mode: "auto", AllowFallback: true}, time.Time{})
		if _, _, e := d.Submit(j); e != nil {
			return 0, 0, e
		}
		p, e, err := j.Wait(ctx)
		if err != nil {
			d.Cancel(j.ID)
			return 0, 0, err
		}
		if e != nil {
			return 0, 0, e
		}
		placement, url = p, p.Candidate.Pool.URL
	}
	var ttft time.Duration
	n := 0
	started := time.Now()
	_, err := (&engine.Client{BaseURL: url, HTTP: client, ReuseStreamConns: true}).Complete(ctx,
		engine.CompletionRequest{Prompt: "Once upon a time there was a little girl named Lily who loved to play in the park", NPredict: qualityTokens},
		func(engine.CompletionChunk) error {
			if n == 0 {
				ttft = time.Since(arrived)
			}
			n++
			return nil
		}, nil)
	if d != nil {
		outcome := dispatch.Succeeded
		if err != nil {
			outcome = dispatch.Abandoned
		}
		d.Release(placement, "", outcome, time.Since(started))
	}
	if err == nil && n != qualityTokens {
		err = errors.New("short stream")
	}
	return ttft, n, err
}
