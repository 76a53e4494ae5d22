package scheduler_test

import (
	"testing"
	"time"

	"github.com/llorch/llorch/scheduler"
)

// now is every test's decision time; staleAfter their staleness bound.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const staleAfter = 15 * time.Second

var (
	fresh = now.Add(-time.Second)
	old   = now.Add(-time.Minute)
)

// filterOne runs f alone on c and returns the rejection reason, "" if c fits.
func filterOne(t *testing.T, f scheduler.FilterPlugin, req scheduler.Request, c scheduler.Candidate) string {
	t.Helper()
	fw, err := scheduler.NewFramework([]scheduler.FilterPlugin{f}, nil, staleAfter)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fw.Schedule(now, &req, []scheduler.Candidate{c}, scheduler.Hints{})
	if len(d.Rejected) == 0 {
		if err != nil {
			t.Fatalf("Schedule: %v", err)
		}
		return ""
	}
	if r := d.Rejected[0]; r.Plugin != f.Name() || r.Reason == "" {
		t.Fatalf("rejected by %q with %q, want plugin %q and a reason", r.Plugin, r.Reason, f.Name())
	}
	return d.Rejected[0].Reason
}

// scoreAll runs p alone (weight 1) behind filters and returns each ranked
// candidate's score by key. The first token weighs as much as the answer
// (TTFTWeight 1): the expected-latency cases spell their costs out so.
func scoreAll(t *testing.T, p scheduler.ScorePlugin, filters []scheduler.FilterPlugin, req scheduler.Request, affinity string, cands ...scheduler.Candidate) map[string]int64 {
	t.Helper()
	fw, err := scheduler.NewFramework(filters, []scheduler.WeightedScorer{{Plugin: p, Weight: 1}}, staleAfter)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fw.Schedule(now, &req, cands, scheduler.Hints{AffinityPool: affinity, TTFTWeight: 1})
	if err != nil {
		t.Fatalf("Schedule: %v", err)
	}
	got := map[string]int64{}
	for _, r := range d.Ranked {
		if len(r.Components) != 1 || r.Components[0] != r.Total {
			t.Fatalf("%s: components %v, total %d", r.Candidate.Key(), r.Components, r.Total)
		}
		got[r.Candidate.Key()] = r.Total
	}
	return got
}

// keys lists the ranked candidates' keys, best first.
func keys(d *scheduler.Decision) []string {
	out := make([]string, len(d.Ranked))
	for i, r := range d.Ranked {
		out[i] = r.Candidate.Key()
	}
	return out
}
