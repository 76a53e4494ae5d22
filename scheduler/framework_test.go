package scheduler_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

// constScore scores every candidate the same, or per node when byNode is set.
type constScore struct {
	name   string
	score  int64
	byNode map[string]int64
	err    error
}

func (c constScore) Name() string { return c.name }

func (c constScore) Score(_ *scheduler.State, _ *scheduler.Request, cand *scheduler.Candidate) (int64, *scheduler.Status) {
	if c.err != nil {
		return 0, &scheduler.Status{Err: c.err}
	}
	if s, ok := c.byNode[cand.NodeID]; ok {
		return s, nil
	}
	return c.score, nil
}

// failFilter fails as a plugin (not "does not fit").
type failFilter struct{ err error }

func (failFilter) Name() string { return "fail" }

func (f failFilter) Filter(*scheduler.State, *scheduler.Request, *scheduler.Candidate) *scheduler.Status {
	return &scheduler.Status{Err: f.err}
}

func TestWeightsMultiply(t *testing.T) {
	fw, err := scheduler.NewFramework(nil, []scheduler.WeightedScorer{
		{Plugin: constScore{name: "a", score: 10}, Weight: 3},
		{Plugin: constScore{name: "b", score: 40, byNode: map[string]int64{"n2": 100}}, Weight: 2},
		{Plugin: constScore{name: "c", score: 7}, Weight: 1000},
	}, staleAfter)
	if err != nil {
		t.Fatal(err)
	}
	cands := []scheduler.Candidate{schedtest.Pool("p").Node("n1").Obj(), schedtest.Pool("p").Node("n2").Obj()}
	d, err := fw.Schedule(now, &scheduler.Request{}, cands, scheduler.Hints{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{"n2/p": {30, 200, 7000}, "n1/p": {30, 80, 7000}}
	if got := keys(d); !slices.Equal(got, []string{"n2/p", "n1/p"}) {
		t.Fatalf("ranking %v", got)
	}
	for _, r := range d.Ranked {
		if !slices.Equal(r.Components, want[r.Candidate.Key()]) {
			t.Errorf("%s: components %v, want %v", r.Candidate.Key(), r.Components, want[r.Candidate.Key()])
		}
		var sum int64
		for _, c := range r.Components {
			sum += c
		}
		if r.Total != sum {
			t.Errorf("%s: total %d, components sum to %d", r.Candidate.Key(), r.Total, sum)
		}
	}
	if best, ok := d.Best(); !ok || best.NodeID != "n2" {
		t.Errorf("Best = %v, %v; want n2", best, ok)
	}
	// Ranked candidates point into the caller's slice: no copies.
	if d.Ranked[0].Candidate != &cands[1] {
		t.Error("Ranked[0].Candidate does not point at the input candidate")
	}
}

// TestDefaultRanking checks the default plugin set end to end: component
// consistency, and that expected latency decides, with affinity and
// preference as adjustments.
func TestDefaultRanking(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter})
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	p := func(node string, tps float64, service time.Duration) *schedtest.CandidateWrapper {
		return schedtest.Pool("pool-0").Node(node).Models("m").Slots(4, 4).FreeVRAM(80*gib, 80*gib).GPUs(0).
			Speed(scheduler.Speed{DecodeTPS: tps, FirstToken: 10 * time.Millisecond, Service: service, Samples: 10})
	}
	cands := []scheduler.Candidate{
		p("half", 50, 640*time.Millisecond).InFlight(2).GPUs(0.5).Obj(), // 630 ms, a busier GPU
		p("slow-idle", 10, 3*time.Second).Obj(),                         // 3,110 ms
		p("idle", 50, 640*time.Millisecond).Obj(),                       // 630 ms
		// 8 tasks ahead on 4 slots: 5 × 640 ms / 4 of waiting, 1,430 ms.
		p("full", 50, 640*time.Millisecond).InFlight(4).Foreign(4).Obj(),
		// every slot busy on 72 ms tasks: 18 ms of waiting, 90 ms.
		p("fast-busy", 500, 72*time.Millisecond).InFlight(4).Obj(),
	}
	req := scheduler.Request{Model: "m", MaxTokens: 32}
	d, err := fw.Schedule(now, &req, cands, scheduler.Hints{})
	if err != nil {
		t.Fatal(err)
	}
	// The default weighs the first token 5 times more: full's 810 ms of
	// waiting cost more than slow-idle's slow answer (5 × 810 + 1,430
	// against 5 × 10 + 3,110 ms).
	if got, want := keys(d), []string{"fast-busy/pool-0", "idle/pool-0", "half/pool-0", "slow-idle/pool-0", "full/pool-0"}; !slices.Equal(got, want) {
		t.Errorf("ranking %v, want %v", got, want)
	}
	wantMS := map[string]int64{"fast-busy": 90, "idle": 630, "half": 630, "full": 1430, "slow-idle": 3110}
	for _, r := range d.Ranked {
		if got := r.Estimate.Latency.Milliseconds(); got != wantMS[r.Candidate.NodeID] {
			t.Errorf("%s: expected latency %d ms, want %d", r.Candidate.NodeID, got, wantMS[r.Candidate.NodeID])
		}
	}
	scorers := fw.Scorers()
	for i, r := range d.Ranked {
		if len(r.Components) != len(scorers) {
			t.Fatalf("%d components, %d scorers", len(r.Components), len(scorers))
		}
		var sum int64
		for j, c := range r.Components {
			w := scorers[j].Weight
			if c%w != 0 || c/w < 0 || c/w > scheduler.MaxScore {
				t.Errorf("%s %s: component %d is not a 0..100 score times weight %d", r.Candidate.Key(), scorers[j].Plugin.Name(), c, w)
			}
			sum += c
		}
		if sum != r.Total {
			t.Errorf("%s: total %d, components sum to %d", r.Candidate.Key(), r.Total, sum)
		}
		if i > 0 && r.Total > d.Ranked[i-1].Total {
			t.Errorf("rank %d total %d above rank %d total %d", i, r.Total, i-1, d.Ranked[i-1].Total)
		}
	}

	// Among pools of equal latency, affinity and preference decide; they
	// do not make a task wait 7× longer.
	for _, tc := range []struct {
		req      scheduler.Request
		affinity string
		want     string
	}{
		{scheduler.Request{Model: "m", MaxTokens: 32, SessionID: "s"}, "half/pool-0", "fast-busy"},
		{scheduler.Request{Model: "m", MaxTokens: 32, Mode: "prefer", PreferPools: []string{"half/pool-0"}, AllowFallback: true}, "", "half"},
		{scheduler.Request{Model: "m", MaxTokens: 32, Mode: "prefer", PreferPools: []string{"slow-idle/pool-0"}, AllowFallback: true}, "", "fast-busy"},
	} {
		without := slices.DeleteFunc(slices.Clone(cands), func(c scheduler.Candidate) bool {
			return c.NodeID == "fast-busy" && tc.want != "fast-busy"
		})
		d, err = fw.Schedule(now, &tc.req, without, scheduler.Hints{AffinityPool: tc.affinity})
		if err != nil {
			t.Fatal(err)
		}
		if best, _ := d.Best(); best.NodeID != tc.want {
			t.Errorf("%+v (affinity %q): best is %s, want %s", tc.req, tc.affinity, best.Key(), tc.want)
		}
	}
	// Affinity breaks the tie between idle and half.
	two := []scheduler.Candidate{cands[0], cands[2]}
	two[0].GPUs, two[0].InFlight = nil, 0
	d, err = fw.Schedule(now, &scheduler.Request{Model: "m", MaxTokens: 32, SessionID: "s"}, two, scheduler.Hints{AffinityPool: "half/pool-0"})
	if err != nil {
		t.Fatal(err)
	}
	if best, _ := d.Best(); best.NodeID != "half" {
		t.Errorf("with affinity, best is %s, want half", best.Key())
	}
}

func TestTieBreak(t *testing.T) {
	fw, err := scheduler.NewFramework(nil, []scheduler.WeightedScorer{{Plugin: constScore{name: "flat", score: 50}, Weight: 1}}, staleAfter)
	if err != nil {
		t.Fatal(err)
	}
	// Equal scores: more free slots first, then node id, then pool id,
	// then replica id.
	cands := []scheduler.Candidate{
		schedtest.Pool("pool-1").Node("b").Slots(4, 4).InFlight(2).Replica("r1").Obj(),
		schedtest.Pool("pool-1").Node("b").Slots(4, 4).InFlight(2).Replica("r0").Obj(),
		schedtest.Pool("pool-0").Node("b").Slots(4, 4).InFlight(2).Obj(),
		schedtest.Pool("pool-0").Node("a").Slots(4, 4).InFlight(2).Obj(),
		schedtest.Pool("pool-9").Node("z").Slots(4, 4).InFlight(1).Obj(),
		schedtest.Pool("pool-0").Node("a").Slots(4, 4).InFlight(3).Obj(), // 1 free
		schedtest.Pool("pool-1").Node("a").Slots(4, 4).InFlight(2).Obj(),
		schedtest.Pool("pool-0").Node("c").Slots(8, 8).InFlight(5).Obj(),
	}
	cands[5].Pool.PoolID = "pool-5"
	want := []string{"c/pool-0", "z/pool-9", "a/pool-0", "a/pool-1", "b/pool-0", "b/pool-1/r0", "b/pool-1/r1", "a/pool-5"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := slices.Clone(cands)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		d, err := fw.Schedule(now, &scheduler.Request{}, shuffled, scheduler.Hints{})
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(d); !slices.Equal(got, want) {
			t.Fatalf("shuffle %d: ranking %v, want %v", i, got, want)
		}
	}
}

func TestNoCandidates(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter})
	if err != nil {
		t.Fatal(err)
	}
	cands := []scheduler.Candidate{
		schedtest.Pool("p").Node("off").Models("m").NodeStatus("offline").Obj(),
		schedtest.Pool("p").Node("leaving").Models("m").NodeStatus("draining").Obj(),
		schedtest.Pool("p").Node("other").Models("x").Obj(),
		schedtest.Pool("p").Node("failed").Models("m").Failed(now).Obj(),
	}
	fw2, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter, Quarantine: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, err := fw2.Schedule(now, &scheduler.Request{Model: "m"}, cands, scheduler.Hints{})
	if !errors.Is(err, scheduler.ErrNoCandidates) {
		t.Fatalf("err = %v, want ErrNoCandidates", err)
	}
	if !strings.Contains(err.Error(), "4 rejected") {
		t.Errorf("err = %q, want the rejected count", err)
	}
	if d == nil {
		t.Fatal("no decision to explain the rejections")
	}
	if _, ok := d.Best(); ok {
		t.Error("Best found a candidate")
	}
	type rej struct{ key, plugin, reason string }
	var got []rej
	for _, r := range d.Rejected {
		got = append(got, rej{r.Candidate.Key(), r.Plugin, r.Reason})
	}
	want := []rej{
		{"off/p", scheduler.ReadyName, "node not online"},
		// A draining node is not "not online": explanations say what it is.
		{"leaving/p", scheduler.ReadyName, "node draining"},
		{"other/p", scheduler.ModelName, "model not served"},
		{"failed/p", scheduler.QuarantineName, "recent dispatch failure"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("rejected\n got %v\nwant %v", got, want)
	}

	// Without the quarantine window, the failed pool is ranked.
	d, err = fw.Schedule(now, &scheduler.Request{Model: "m"}, cands, scheduler.Hints{})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(d); !slices.Equal(got, []string{"failed/p"}) {
		t.Errorf("ranked %v", got)
	}

	// Nothing to choose from at all.
	if _, err := fw.Schedule(now, &scheduler.Request{}, nil, scheduler.Hints{}); !errors.Is(err, scheduler.ErrNoCandidates) {
		t.Errorf("no candidates: err = %v", err)
	}
}

func TestPluginErrors(t *testing.T) {
	boom := errors.New("boom")
	cands := []scheduler.Candidate{schedtest.Pool("p").Obj()}
	cases := []struct {
		name    string
		filters []scheduler.FilterPlugin
		scorer  scheduler.ScorePlugin
		want    string
	}{
		{"filter fails", []scheduler.FilterPlugin{failFilter{boom}}, constScore{name: "s"}, "filter fail on n1/p: boom"},
		{"scorer fails", nil, constScore{name: "s", err: boom}, "score s on n1/p: boom"},
		{"score above 100", nil, constScore{name: "s", score: 101}, "score s on n1/p: 101 out of 0..100"},
		{"score below 0", nil, constScore{name: "s", score: -1}, "score s on n1/p: -1 out of 0..100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fw, err := scheduler.NewFramework(tc.filters, []scheduler.WeightedScorer{{Plugin: tc.scorer, Weight: 1}}, staleAfter)
			if err != nil {
				t.Fatal(err)
			}
			_, err = fw.Schedule(now, &scheduler.Request{}, cands, scheduler.Hints{})
			if err == nil || err.Error() != tc.want || errors.Is(err, scheduler.ErrNoCandidates) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if tc.name != "score above 100" && tc.name != "score below 0" && !errors.Is(err, boom) {
				t.Errorf("err = %v does not wrap the plugin's error", err)
			}
		})
	}
}

func TestNewFramework(t *testing.T) {
	s := func(name string, w int64) scheduler.WeightedScorer {
		return scheduler.WeightedScorer{Plugin: constScore{name: name}, Weight: w}
	}
	cases := []struct {
		name    string
		filters []scheduler.FilterPlugin
		scorers []scheduler.WeightedScorer
		want    string // error substring; "" = accepted
	}{
		{"weights 1 and 1000", nil, []scheduler.WeightedScorer{s("a", 1), s("b", 1000)}, ""},
		{"no plugins", nil, nil, ""},
		{"weight 0", nil, []scheduler.WeightedScorer{s("a", 0)}, "score plugin a: weight 0, want 1..1000"},
		{"negative weight", nil, []scheduler.WeightedScorer{s("a", -3)}, "weight -3"},
		{"weight above 1000", nil, []scheduler.WeightedScorer{s("a", 1001)}, "weight 1001, want 1..1000"},
		{"duplicate scorer", nil, []scheduler.WeightedScorer{s("a", 1), s("a", 2)}, "plugin a listed twice"},
		{"duplicate filter", []scheduler.FilterPlugin{scheduler.Ready{}, scheduler.Ready{}}, nil, "plugin ready listed twice"},
		{"filter and scorer share a name", []scheduler.FilterPlugin{scheduler.Model{}}, []scheduler.WeightedScorer{s("model", 1)}, "plugin model listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fw, err := scheduler.NewFramework(tc.filters, tc.scorers, staleAfter)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("err = %v", err)
			case tc.want == "" && len(fw.Scorers()) != len(tc.scorers):
				t.Errorf("Scorers() = %v", fw.Scorers())
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want %q", err, tc.want)
			case tc.want != "" && fw != nil:
				t.Error("a framework alongside the error")
			}
		})
	}
}

func TestSampledFrameworkRotatesOverLargeFleets(t *testing.T) {
	full, err := scheduler.NewDefault(scheduler.Options{StaleAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	fw := full.Sampled()
	var cands []scheduler.Candidate
	for i := range 400 {
		cands = append(cands, schedtest.Pool("pool-0").Node(fmt.Sprintf("n%03d", i)).Slots(4, 4).Obj())
	}
	if got := scheduler.FeasibleToFind(400); got != 100 {
		t.Fatalf("FeasibleToFind(400) = %d", got)
	}
	if got := scheduler.FeasibleToFind(4000); got != 200 {
		t.Fatalf("FeasibleToFind(4000) = %d", got)
	}
	if got := scheduler.FeasibleToFind(60); got != 60 {
		t.Fatalf("FeasibleToFind(60) = %d", got)
	}
	seen := map[string]bool{}
	for range 4 {
		req := scheduler.Request{}
		d, err := fw.Schedule(time.Now(), &req, cands, scheduler.Hints{})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Ranked) != 100 || d.Examined != 100 {
			t.Fatalf("ranked %d, examined %d, want 100", len(d.Ranked), d.Examined)
		}
		for _, r := range d.Ranked {
			seen[r.Candidate.NodeID] = true
		}
	}
	// Four decisions of 100 each covered all 400 pools: the start rotates.
	if len(seen) != 400 {
		t.Fatalf("4 sampled decisions examined %d distinct pools, want 400", len(seen))
	}
	// The unsampled framework still ranks everything.
	req := scheduler.Request{}
	if d, _ := full.Schedule(time.Now(), &req, cands, scheduler.Hints{}); len(d.Ranked) != 400 {
		t.Fatalf("full framework ranked %d", len(d.Ranked))
	}
	if !full.AnyFeasible(time.Now(), &req, cands) {
		t.Fatal("AnyFeasible = false")
	}
	none := scheduler.Request{Model: "absent"}
	if full.AnyFeasible(time.Now(), &none, cands) {
		t.Fatal("AnyFeasible(absent model) = true")
	}
}
