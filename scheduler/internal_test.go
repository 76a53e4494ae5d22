package scheduler

import (
	"math"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

func TestRatioScore(t *testing.T) {
	cases := []struct {
		v, lo, hi float64
		invert    bool
		want      int64
	}{
		{0, 0, 4, false, 0},
		{4, 0, 4, false, 100},
		{1, 0, 4, false, 25},
		{1, 0, 4, true, 75},
		{1, 0, 3, false, 33},
		{2, 0, 3, false, 67},
		{-1, 0, 4, false, 0},  // clamped
		{9, 0, 4, false, 100}, // clamped
		{9, 0, 4, true, 0},
		{math.NaN(), 0, 4, false, 50},
		{math.NaN(), 0, 4, true, 50},
		{1, 0, 0, false, 50}, // empty range
		{1, 4, 2, false, 50},
		{math.Inf(1), 0, 4, false, 100},
	}
	for _, tc := range cases {
		if got := ratioScore(tc.v, tc.lo, tc.hi, tc.invert); got != tc.want {
			t.Errorf("ratioScore(%v, %v, %v, %v) = %d, want %d", tc.v, tc.lo, tc.hi, tc.invert, got, tc.want)
		}
	}
}

// TestFeasibleFilterAllocs: a Filter that keeps a candidate allocates
// nothing, with every request-derived map in use; so does every Score.
func TestFeasibleFilterAllocs(t *testing.T) {
	now := time.Now()
	state := &State{
		Now: now, StaleAfter: time.Minute, AffinityPool: "gpu-node-0001.rack-17.cluster.example.com/pool-0", BestCost: time.Second,
		avoid:  newPoolSet([]string{"pool-9", "gpu-node-0002.rack-17.cluster.example.com/pool-0", "gpu-node-0001.rack-17.cluster.example.com/pool-0/r0"}),
		prefer: newPoolSet([]string{"pool-0", "gpu-node-0001.rack-17.cluster.example.com/pool-1"}),
	}
	req := &Request{
		Model: "m", PromptTokens: 100, MaxTokens: 32, Mode: "prefer", NodeID: "gpu-node-0001.rack-17.cluster.example.com",
		PreferPools: []string{"pool-0"}, AvoidPools: []string{"pool-9"}, DeviceMask: "0,1",
	}
	c := &Candidate{
		NodeID: "gpu-node-0001.rack-17.cluster.example.com", NodeStatus: api.StatusOnline, ReplicaID: "r1",
		Pool: api.PoolState{
			PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 2, DeviceMask: "0,1",
			VRAMTotalBytes: 80 << 30, VRAMFreeBytes: 40 << 30, Models: []string{"x", "m"},
		},
		GPUs:          []api.GPUState{{DeviceID: 0, Utilization: 0.5}, {DeviceID: 1, Utilization: 0.1}},
		InFlight:      1,
		Util:          Utilization{At: now, GPUUtilization: 0.3, FreeVRAMBytes: 20 << 30, RequestsProcessing: 2, TokenRate: 50},
		RecentFailure: now.Add(-time.Hour),
	}
	filters := []FilterPlugin{Ready{}, Model{}, Placement{}, DeviceMask{}, Quarantine{Window: time.Minute}}
	for _, f := range filters {
		if st := f.Filter(state, req, c); st != nil {
			t.Fatalf("%s rejects the candidate: %s", f.Name(), st.Reason)
		}
		if n := testing.AllocsPerRun(100, func() { f.Filter(state, req, c) }); n != 0 {
			t.Errorf("%s.Filter allocates %v times", f.Name(), n)
		}
	}
	scorers := []ScorePlugin{ExpectedLatency{}, GPUUtilization{}, FreeVRAM{}, SessionAffinity{}, Prefer{}}
	for _, s := range scorers {
		if n := testing.AllocsPerRun(100, func() { _, _ = s.Score(state, req, c) }); n != 0 {
			t.Errorf("%s.Score allocates %v times", s.Name(), n)
		}
	}
}

// TestPoolSet: a pool set matches a candidate exactly when a name equals
// its pool id, its pool key or (a replica) its key, like a map of names
// looked up with all three; hasKey matches the key and the pool key.
func TestPoolSet(t *testing.T) {
	names := []string{"pool-1", "n1/pool-0", "a/b/c", "/lead", "trail/", "n3/pool-0/r1", "n4/pool-0/", "n5//r0"}
	cands := []struct{ node, pool, replica string }{
		{"n1", "pool-0", ""}, {"n2", "pool-0", ""}, {"n2", "pool-1", ""}, {"n1", "pool-2", ""},
		{"a", "b/c", ""}, {"a/b", "c", ""}, {"a", "b", ""}, {"", "lead", ""}, {"trail", "", ""},
		{"n1/pool-0", "", ""}, {"", "pool-1", ""}, {"x", "n1/pool-0", ""},
		// Replicas: a pool id or pool key names every replica; a replica
		// key names one.
		{"n1", "pool-0", "r0"}, {"n1", "pool-0", "r1"}, {"n2", "pool-1", "r0"},
		{"n3", "pool-0", "r0"}, {"n3", "pool-0", "r1"}, {"n3", "pool-0", "r10"}, {"n3", "pool-0", ""},
		{"a", "b", "c"}, {"n4", "pool-0", "x"}, {"n5", "", "r0"},
	}
	set := newPoolSet(names)
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, tc := range cands {
		c := &Candidate{NodeID: tc.node, ReplicaID: tc.replica, Pool: api.PoolState{PoolID: tc.pool}}
		if got, w := set.has(c), want[c.Pool.PoolID] || want[c.PoolKey()] || want[c.Key()]; got != w {
			t.Errorf("%q/%q/%q: has = %v, want %v", tc.node, tc.pool, tc.replica, got, w)
		}
		for _, k := range append(names, "n1/pool-0x", "n1pool-0", "", "n1/pool-0/r0", "n1/pool-0/r", "n1/pool-0/r00", "n1/pool-0r0", "n1/pool-0/") {
			if got, w := c.hasKey(k), k == c.Key() || k == c.PoolKey(); got != w {
				t.Errorf("%q/%q/%q: hasKey(%q) = %v, want %v", tc.node, tc.pool, tc.replica, k, got, w)
			}
		}
	}
	if !newPoolSet(nil).empty() || set.empty() {
		t.Error("empty() wrong")
	}
}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		c            Candidate
		key, poolKey string
	}{
		{Candidate{NodeID: "n1", Pool: api.PoolState{PoolID: "pool-0"}}, "n1/pool-0", "n1/pool-0"},
		{Candidate{NodeID: "n1", ReplicaID: "r1", Pool: api.PoolState{PoolID: "pool-0"}}, "n1/pool-0/r1", "n1/pool-0"},
	} {
		if got := tc.c.Key(); got != tc.key {
			t.Errorf("Key() = %q, want %q", got, tc.key)
		}
		if got := tc.c.PoolKey(); got != tc.poolKey {
			t.Errorf("PoolKey() = %q, want %q", got, tc.poolKey)
		}
	}
}
