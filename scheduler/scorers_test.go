package scheduler_test

import (
	"maps"
	"testing"

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
			name: "free slots: share of slots free, in flight counted", plugin: scheduler.FreeSlots{},
			cands: []cand{
				p("a", "p").Obj(),
				p("b", "p").Slots(4, 1).Obj(),
				p("c", "p").Slots(4, 0).Obj(),
				p("d", "p").Slots(4, 3).InFlight(2).Obj(),
				p("e", "p").Slots(3, 1).Obj(),
				p("f", "p").Slots(0, 0).Obj(),
			},
			want: map[string]int64{"a/p": 100, "b/p": 25, "c/p": 0, "d/p": 50, "e/p": 33, "f/p": 0},
		},
		{
			// load over twice the slots: empty 100, full slots 50, a queue
			// as deep again 0.
			name: "engine queue: fresh metrics, else registry busy", plugin: scheduler.EngineQueue{},
			cands: []cand{
				p("idle", "p").Obj(),
				p("full", "p").Slots(4, 0).Obj(),
				p("queued", "p").Util(schedtest.Util(fresh).Queue(4, 4).Obj()).Obj(),
				p("deep", "p").Util(schedtest.Util(fresh).Queue(20, 4).Obj()).Obj(),
				// The engine saw 2 processing; we have since sent 3.
				p("inflight", "p").InFlight(3).Util(schedtest.Util(fresh).Queue(0, 2).Obj()).Obj(),
				// A stale queue is ignored: registry busy (1) decides.
				p("stale", "p").Slots(4, 3).Util(schedtest.Util(old).Queue(8, 4).Obj()).Obj(),
				// Stale metrics with an idle registry never read as full.
				p("stale-idle", "p").Util(schedtest.Util(old).Queue(100, 4).Obj()).Obj(),
			},
			want: map[string]int64{
				"idle/p": 100, "full/p": 50, "queued/p": 0, "deep/p": 0,
				"inflight/p": 63, "stale/p": 88, "stale-idle/p": 100,
			},
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
			name: "token rate: relative to the fastest fresh candidate", plugin: scheduler.TokenRate{},
			cands: []cand{
				p("fast", "p").Util(schedtest.Util(fresh).TokenRate(100).Obj()).Obj(),
				p("half", "p").Util(schedtest.Util(fresh).TokenRate(50).Obj()).Obj(),
				p("stopped", "p").Util(schedtest.Util(fresh).TokenRate(0).Obj()).Obj(),
				p("stale", "p").Util(schedtest.Util(old).TokenRate(400).Obj()).Obj(),
				p("unknown", "p").Obj(),
				p("nan", "p").Util(schedtest.Util(fresh).Obj()).Obj(),
			},
			want: map[string]int64{
				"fast/p": 100, "half/p": 50, "stopped/p": 0,
				"stale/p": 50, "unknown/p": 50, "nan/p": 50,
			},
		},
		{
			name: "token rate: infeasible candidates set no pace", plugin: scheduler.TokenRate{},
			filters: []scheduler.FilterPlugin{scheduler.Model{}},
			req:     scheduler.Request{Model: "m"},
			cands: []cand{
				p("fast", "p").Models("other").Util(schedtest.Util(fresh).TokenRate(1000).Obj()).Obj(),
				p("a", "p").Util(schedtest.Util(fresh).TokenRate(80).Obj()).Obj(),
				p("b", "p").Util(schedtest.Util(fresh).TokenRate(20).Obj()).Obj(),
			},
			want: map[string]int64{"a/p": 100, "b/p": 25},
		},
		{
			name: "token rate: none known is neutral", plugin: scheduler.TokenRate{},
			cands: []cand{
				p("a", "p").Obj(),
				p("b", "p").Util(schedtest.Util(fresh).TokenRate(0).Obj()).Obj(),
			},
			want: map[string]int64{"a/p": 50, "b/p": 50},
		},
		{
			name: "session affinity: the pool that served the session", plugin: scheduler.SessionAffinity{},
			affinity: "n1/pool-0",
			cands:    []cand{p("n1", "pool-0").Obj(), p("n1", "pool-1").Obj(), p("n2", "pool-0").Obj()},
			want:     map[string]int64{"n1/pool-0": 100, "n1/pool-1": 0, "n2/pool-0": 0},
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

// TestMissingMetricsNeverFull: a pool whose metrics are stale or missing
// scores as its registry state says, never as a full pool would.
func TestMissingMetricsNeverFull(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter, RequireFreeSlot: true})
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	base := func(node string) *schedtest.CandidateWrapper {
		return schedtest.Pool("pool-0").Node(node).Slots(4, 4).Models("m").FreeVRAM(40*gib, 40*gib).GPUs(0)
	}
	// "full" looked full when last scraped, long ago; "none" was never
	// scraped; "idle" is freshly scraped idle.
	cands := []scheduler.Candidate{
		base("full").Util(schedtest.Util(old).GPU(1).VRAM(0).Queue(50, 4).TokenRate(1).Obj()).Obj(),
		base("none").Obj(),
		base("idle").Util(schedtest.Util(fresh).GPU(0).VRAM(40 * gib).TokenRate(100).Obj()).Obj(),
	}
	d, err := fw.Schedule(now, &scheduler.Request{Model: "m", VRAMBytes: 8 * gib}, cands, "")
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
	// Only the neutral token rate (50 of 100, weight 2) separates them
	// from the freshly idle pool.
	if want := totals["idle"] - 50*scheduler.DefaultWeights[scheduler.TokenRateName]; totals["none"] != want {
		t.Errorf("no metrics total %d, want %d (idle %d less the neutral token rate)", totals["none"], want, totals["idle"])
	}
}
