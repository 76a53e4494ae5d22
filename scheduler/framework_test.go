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
	d, err := fw.Schedule(now, &scheduler.Request{}, cands, "")
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
// consistency, and the order a plain reading of the fleet expects.
func TestDefaultRanking(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter})
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	p := func(node string) *schedtest.CandidateWrapper {
		return schedtest.Pool("pool-0").Node(node).Models("m").FreeVRAM(80*gib, 80*gib).GPUs(0)
	}
	cands := []scheduler.Candidate{
		p("busy").Slots(4, 1).GPUs(0.9).Util(schedtest.Util(fresh).GPU(0.9).Queue(1, 3).TokenRate(40).Obj()).Obj(),
		p("idle").Slots(4, 4).Util(schedtest.Util(fresh).GPU(0).Queue(0, 0).TokenRate(50).Obj()).Obj(),
		p("almost").Slots(4, 3).Util(schedtest.Util(fresh).GPU(0.1).Queue(0, 1).TokenRate(50).Obj()).Obj(),
		p("half").Slots(4, 2).Util(schedtest.Util(fresh).GPU(0.5).Queue(0, 2).TokenRate(50).Obj()).Obj(),
		p("full").Slots(4, 0).Util(schedtest.Util(fresh).GPU(1).Queue(4, 4).TokenRate(50).Obj()).Obj(),
	}
	d, err := fw.Schedule(now, &scheduler.Request{Model: "m"}, cands, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(d), []string{"idle/pool-0", "almost/pool-0", "half/pool-0", "busy/pool-0", "full/pool-0"}; !slices.Equal(got, want) {
		t.Errorf("ranking %v, want %v", got, want)
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

	// Affinity and preference outweigh a small difference in load.
	for _, req := range []scheduler.Request{
		{Model: "m", SessionID: "s"},
		{Model: "m", Mode: "prefer", PreferPools: []string{"almost/pool-0"}, AllowFallback: true},
	} {
		affinity := ""
		if req.SessionID != "" {
			affinity = "almost/pool-0"
		}
		d, err = fw.Schedule(now, &req, cands, affinity)
		if err != nil {
			t.Fatal(err)
		}
		if best, _ := d.Best(); best.NodeID != "almost" {
			t.Errorf("%+v: best is %s, want almost", req, best.Key())
		}
	}
}

func TestTieBreak(t *testing.T) {
	fw, err := scheduler.NewFramework(nil, []scheduler.WeightedScorer{{Plugin: constScore{name: "flat", score: 50}, Weight: 1}}, staleAfter)
	if err != nil {
		t.Fatal(err)
	}
	// Equal scores: more free slots first, then node id, then pool id.
	cands := []scheduler.Candidate{
		schedtest.Pool("pool-1").Node("b").Slots(4, 2).Obj(),
		schedtest.Pool("pool-0").Node("b").Slots(4, 2).Obj(),
		schedtest.Pool("pool-0").Node("a").Slots(4, 2).Obj(),
		schedtest.Pool("pool-9").Node("z").Slots(4, 3).Obj(),
		schedtest.Pool("pool-0").Node("a").Slots(4, 4).InFlight(3).Obj(), // 1 free
		schedtest.Pool("pool-1").Node("a").Slots(4, 2).Obj(),
		schedtest.Pool("pool-0").Node("c").Slots(8, 3).Obj(),
	}
	cands[4].Pool.PoolID = "pool-5"
	want := []string{"c/pool-0", "z/pool-9", "a/pool-0", "a/pool-1", "b/pool-0", "b/pool-1", "a/pool-5"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := slices.Clone(cands)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		d, err := fw.Schedule(now, &scheduler.Request{}, shuffled, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(d); !slices.Equal(got, want) {
			t.Fatalf("shuffle %d: ranking %v, want %v", i, got, want)
		}
	}
}

func TestNoCandidates(t *testing.T) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter, RequireFreeSlot: true})
	if err != nil {
		t.Fatal(err)
	}
	cands := []scheduler.Candidate{
		schedtest.Pool("p").Node("off").Models("m").NodeStatus("offline").Obj(),
		schedtest.Pool("p").Node("other").Models("x").Obj(),
		schedtest.Pool("p").Node("full").Models("m").Slots(2, 0).Obj(),
		schedtest.Pool("p").Node("failed").Models("m").Failed(now).Obj(),
	}
	fw2, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter, RequireFreeSlot: true, Quarantine: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, err := fw2.Schedule(now, &scheduler.Request{Model: "m"}, cands, "")
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
		{"other/p", scheduler.ModelName, "model not served"},
		{"full/p", scheduler.CapacityName, "no free slot"},
		{"failed/p", scheduler.QuarantineName, "recent dispatch failure"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("rejected\n got %v\nwant %v", got, want)
	}

	// Without the quarantine window, the failed pool is ranked.
	d, err = fw.Schedule(now, &scheduler.Request{Model: "m"}, cands, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(d); !slices.Equal(got, []string{"failed/p"}) {
		t.Errorf("ranked %v", got)
	}

	// Nothing to choose from at all.
	if _, err := fw.Schedule(now, &scheduler.Request{}, nil, ""); !errors.Is(err, scheduler.ErrNoCandidates) {
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
			_, err = fw.Schedule(now, &scheduler.Request{}, cands, "")
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
		d, err := fw.Schedule(time.Now(), &req, cands, "")
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
	if d, _ := full.Schedule(time.Now(), &req, cands, ""); len(d.Ranked) != 400 {
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
