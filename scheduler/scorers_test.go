package scheduler_test

import (
	"maps"
	"testing"
	"time"

	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

func TestScorers(t *testing.T) {
	const gib = 1 << 30
	type cand = scheduler.Candidate
	p := func(node, pool string) *schedtest.CandidateWrapper {
		return schedtest.Pool(pool).Node(node).Slots(4, 4).Models("m")
	}
	cases := []struct {
		name     string
		plugin   scheduler.ScorePlugin
		filters  []scheduler.FilterPlugin
		req      scheduler.Request
		affinity string
		cands    []cand
		want     map[string]int64
	}{
		{
			// The cost is time to first token plus latency: the cheapest
			// scores 100, one twice as costly 50.
			name: "expected latency: relative to the fastest", plugin: scheduler.ExpectedLatency{},
			req: scheduler.Request{MaxTokens: 11},
			cands: []cand{
				// 10 ms to the first token, 10 more at 100/s: 10 + 110 ms.
				p("a", "p").Speed(learned(100, 0, 110*time.Millisecond)).Obj(),
				p("b", "p").Speed(learned(50, 0, 210*time.Millisecond)).Obj(), // 10 + 210 ms
				// Every slot busy: a quarter of a 110 ms task to wait,
				// 37.5 + 137.5 ms.
				p("busy", "p").Speed(learned(100, 0, 110*time.Millisecond)).InFlight(4).Obj(),
				// Never measured: the engine's counters, and the default
				// 20 ms to the first token: 20 + 120 ms.
				p("engine", "p").Util(schedtest.Util(fresh).TokenRate(100).Obj()).Obj(),
				// Stale counters: the defaults, 50 tokens/s: 20 + 220 ms.
				p("stale", "p").Util(schedtest.Util(old).TokenRate(1000).Obj()).Obj(),
				// No scrape, but the engine's counters in its heartbeat.
				p("reported", "p").Reported(scheduler.Speed{DecodeTPS: 100}).Obj(),
				// A fresh scrape is newer than the heartbeat's counters.
				p("both", "p").Reported(scheduler.Speed{DecodeTPS: 50}).Util(schedtest.Util(fresh).TokenRate(100).Obj()).Obj(),
			},
			want: map[string]int64{"a/p": 100, "b/p": 55, "busy/p": 69, "engine/p": 86, "stale/p": 50, "reported/p": 86, "both/p": 86},
		},
		{
			name: "expected latency: prefill of the prompt", plugin: scheduler.ExpectedLatency{},
			req: scheduler.Request{PromptTokens: 1000, MaxTokens: 11},
			cands: []cand{
				// Time to first token 10 + 100 ms, twice, and 100 ms more.
				p("a", "p").Speed(learned(100, 10000, 0)).Obj(),
				p("b", "p").Speed(learned(100, 1000, 0)).Obj(),                                           // 2 × 1,010 + 100 ms
				p("engine", "p").Util(schedtest.Util(fresh).TokenRate(100).PromptRate(5000).Obj()).Obj(), // 2 × 220 + 100 ms
			},
			want: map[string]int64{"a/p": 100, "b/p": 15, "engine/p": 59},
		},
		{
			name: "gpu utilization: scraped, else heartbeat, else neutral", plugin: scheduler.GPUUtilization{},
			cands: []cand{
				p("scraped", "p").GPUs(0.9).Util(schedtest.Util(fresh).GPU(0.25).Obj()).Obj(),
				p("busy", "p").Util(schedtest.Util(fresh).GPU(1).Obj()).Obj(),
				p("nan", "p").GPUs(0.2, 0.4).Util(schedtest.Util(fresh).Obj()).Obj(),
				p("stale", "p").GPUs(0.1).Util(schedtest.Util(old).GPU(0.9).Obj()).Obj(),
				p("heartbeat", "p").GPUs(0, 0).Obj(),
				p("unknown", "p").Obj(),
				p("stale-unknown", "p").Util(schedtest.Util(old).GPU(1).Obj()).Obj(),
			},
			want: map[string]int64{
				"scraped/p": 75, "busy/p": 0, "nan/p": 70, "stale/p": 90,
				"heartbeat/p": 100, "unknown/p": 50, "stale-unknown/p": 50,
			},
		},
		{
			name: "free vram: share free, scraped else heartbeat, else neutral", plugin: scheduler.FreeVRAM{},
			cands: []cand{
				p("scraped", "p").FreeVRAM(40*gib, 0).Util(schedtest.Util(fresh).VRAM(30 * gib).Obj()).Obj(),
				p("stale", "p").FreeVRAM(40*gib, 10*gib).Util(schedtest.Util(old).VRAM(40 * gib).Obj()).Obj(),
				p("heartbeat", "p").FreeVRAM(40*gib, 40*gib).Obj(),
				p("unknown", "p").Obj(),
				p("no-total", "p").Util(schedtest.Util(fresh).VRAM(30 * gib).Obj()).Obj(),
				p("stale-unknown", "p").Util(schedtest.Util(old).VRAM(0).Obj()).Obj(),
			},
			want: map[string]int64{
				"scraped/p": 75, "stale/p": 25, "heartbeat/p": 100,
				"unknown/p": 50, "no-total/p": 50, "stale-unknown/p": 50,
			},
		},
		{
			name: "session affinity: the pool that served the session", plugin: scheduler.SessionAffinity{},
			affinity: "n1/pool-0",
			cands:    []cand{p("n1", "pool-0").Obj(), p("n1", "pool-1").Obj(), p("n2", "pool-0").Obj()},
			want:     map[string]int64{"n1/pool-0": 100, "n1/pool-1": 0, "n2/pool-0": 0},
		},
		{
			name: "session affinity: the replica that served the session, not its siblings", plugin: scheduler.SessionAffinity{},
			affinity: "n1/pool-0/r1",
			cands:    []cand{p("n1", "pool-0").Replica("r0").Obj(), p("n1", "pool-0").Replica("r1").Obj(), p("n2", "pool-0").Replica("r1").Obj()},
			want:     map[string]int64{"n1/pool-0/r0": 0, "n1/pool-0/r1": 100, "n2/pool-0/r1": 0},
		},
		{
			name: "session affinity: none", plugin: scheduler.SessionAffinity{},
			cands: []cand{p("n1", "pool-0").Obj(), p("n2", "pool-0").Obj()},
			want:  map[string]int64{"n1/pool-0": 0, "n2/pool-0": 0},
		},
		{
			name: "prefer: by pool id", plugin: scheduler.Prefer{},
			req:   scheduler.Request{Mode: "prefer", PreferPools: []string{"pool-1"}, AllowFallback: true},
			cands: []cand{p("n1", "pool-0").Obj(), p("n1", "pool-1").Obj(), p("n2", "pool-1").Obj()},
			want:  map[string]int64{"n1/pool-0": 0, "n1/pool-1": 100, "n2/pool-1": 100},
		},
		{
			name: "prefer: by key", plugin: scheduler.Prefer{},
			req:   scheduler.Request{Mode: "prefer", PreferPools: []string{"n2/pool-1"}, AllowFallback: true},
			cands: []cand{p("n1", "pool-1").Obj(), p("n2", "pool-1").Obj()},
			want:  map[string]int64{"n1/pool-1": 0, "n2/pool-1": 100},
		},
		{
			name: "prefer: node with fallback", plugin: scheduler.Prefer{},
			req:   scheduler.Request{Mode: "prefer", NodeID: "n2", AllowFallback: true},
			cands: []cand{p("n1", "pool-0").Obj(), p("n2", "pool-0").Obj()},
			want:  map[string]int64{"n1/pool-0": 0, "n2/pool-0": 100},
		},
		{
			name: "prefer: node and pools, half for either", plugin: scheduler.Prefer{},
			req: scheduler.Request{Mode: "prefer", NodeID: "n2", PreferPools: []string{"pool-1"}, AllowFallback: true},
			cands: []cand{
				p("n1", "pool-0").Obj(), p("n1", "pool-1").Obj(),
				p("n2", "pool-0").Obj(), p("n2", "pool-1").Obj(),
			},
			want: map[string]int64{"n1/pool-0": 0, "n1/pool-1": 50, "n2/pool-0": 50, "n2/pool-1": 100},
		},
		{
			name: "prefer: prefer_pools count in auto mode too", plugin: scheduler.Prefer{},
			req:   scheduler.Request{Mode: "auto", PreferPools: []string{"pool-0"}},
			cands: []cand{p("n1", "pool-0").Obj(), p("n1", "pool-1").Obj()},
			want:  map[string]int64{"n1/pool-0": 100, "n1/pool-1": 0},
		},
		{
			name: "prefer: nothing preferred", plugin: scheduler.Prefer{},
			req:   scheduler.Request{Mode: "auto", NodeID: "n1"},
			cands: []cand{p("n1", "pool-0").Obj(), p("n2", "pool-0").Obj()},
			want:  map[string]int64{"n1/pool-0": 0, "n2/pool-0": 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := scoreAll(t, tc.plugin, tc.filters, tc.req, tc.affinity, tc.cands...)
			if !maps.Equal(got, tc.want) {
				t.Errorf("scores\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// learned is a pool's speed measured over a few tasks.
func learned(decode, prefill float64, service time.Duration) scheduler.Speed {
	return scheduler.Speed{DecodeTPS: decode, PrefillTPS: prefill, FirstToken: 10 * time.Millisecond, Service: service, Samples: 5}
}

// TestMissingMetricsNeverFull: a pool whose metrics are stale or missing
// scores as a pool never measured, never as a full pool would.
func TestMissingMetricsNeverFull(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter})
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	base := func(node string) *schedtest.CandidateWrapper {
		return schedtest.Pool("pool-0").Node(node).Slots(4, 4).Models("m").FreeVRAM(40*gib, 40*gib).GPUs(0)
	}
	// "full" looked full and crawling when last scraped, long ago; "none"
	// was never scraped; "idle" is freshly scraped idle and fast.
	cands := []scheduler.Candidate{
		base("full").Util(schedtest.Util(old).GPU(1).VRAM(0).Queue(50, 4).TokenRate(1).Obj()).Obj(),
		base("none").Obj(),
		base("idle").Util(schedtest.Util(fresh).GPU(0).VRAM(40 * gib).TokenRate(100).Obj()).Obj(),
	}
	d, err := fw.Schedule(now, &scheduler.Request{Model: "m", MaxTokens: 32}, cands, scheduler.Hints{})
	if err != nil {
		t.Fatalf("Schedule: %v (rejected %+v)", err, d.Rejected)
	}
	totals := map[string]int64{}
	for _, r := range d.Ranked {
		totals[r.Candidate.NodeID] = r.Total
	}
	if totals["full"] != totals["none"] {
		t.Errorf("stale metrics total %d, no metrics %d: want equal", totals["full"], totals["none"])
	}
	if totals["idle"] <= totals["none"] {
		t.Errorf("a pool known to be fast (%d) does not beat one never measured (%d)", totals["idle"], totals["none"])
	}
}
