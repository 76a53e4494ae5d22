package scheduler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// FilterPlugin drops candidates that cannot take the request.
type FilterPlugin interface {
	Name() string
	Filter(state *State, req *Request, c *Candidate) *Status
}

// ScorePlugin rates a candidate 0-100 (higher is better).
type ScorePlugin interface {
	Name() string
	Score(state *State, req *Request, c *Candidate) (int64, *Status)
}

// MaxScore is the highest score a plugin may give.
const MaxScore = 100

// maxWeight keeps weighted sums far from overflow.
const maxWeight = 1000

// WeightedScorer is a score plugin with the weight the framework gives it.
type WeightedScorer struct {
	Plugin ScorePlugin
	Weight int64
}

// Framework runs filters and weighted scorers.
type Framework struct {
	filters []FilterPlugin
	scorers []WeightedScorer
	stale   time.Duration
	// sample, when set, stops filtering once enough feasible candidates
	// are found on a large fleet (see FeasibleToFind); next rotates where
	// each decision starts, so every pool gets its turn.
	sample bool
	next   atomic.Uint64
}

// NewFramework validates the plugin set: every scorer needs a weight in
// 1..1000, and names must be unique.
func NewFramework(filters []FilterPlugin, scorers []WeightedScorer, staleAfter time.Duration) (*Framework, error) {
	seen := map[string]bool{}
	for _, f := range filters {
		if seen[f.Name()] {
			return nil, fmt.Errorf("plugin %s listed twice", f.Name())
		}
		seen[f.Name()] = true
	}
	for _, s := range scorers {
		if seen[s.Plugin.Name()] {
			return nil, fmt.Errorf("plugin %s listed twice", s.Plugin.Name())
		}
		seen[s.Plugin.Name()] = true
		if s.Weight < 1 || s.Weight > maxWeight {
			return nil, fmt.Errorf("score plugin %s: weight %d, want 1..%d", s.Plugin.Name(), s.Weight, maxWeight)
		}
	}
	return &Framework{filters: filters, scorers: scorers, stale: staleAfter}, nil
}

// Sampled returns a framework with the same plugins that scores only a
// rotating sample of the feasible candidates on large fleets, as the
// Kubernetes scheduler does (percentageOfNodesToScore): on 4,000 pools a
// decision examines about 200 feasible ones, starting where the last one
// stopped. Explanations use the unsampled framework.
func (f *Framework) Sampled() *Framework {
	return &Framework{filters: f.filters, scorers: f.scorers, stale: f.stale, sample: true}
}

// FeasibleToFind is how many feasible candidates a sampled decision
// scores out of n: all up to 100, then 5 %, at least 100.
func FeasibleToFind(n int) int {
	if n <= 100 {
		return n
	}
	return max(100, n*5/100)
}

// Scorers returns the scorers with their weights, for explanations.
func (f *Framework) Scorers() []WeightedScorer { return f.scorers }

// Ranked is one feasible candidate with its score components.
type Ranked struct {
	Candidate *Candidate
	Total     int64
	// Components are the weighted scores, in the framework's scorer order.
	Components []int64
	// Estimate is the task's expected latency on the candidate.
	Estimate Estimate
}

// Rejected is one infeasible candidate and why.
type Rejected struct {
	Candidate *Candidate
	Plugin    string
	Reason    string
}

// Decision is a placement: candidates ranked best first (a sampled
// framework orders only the first two).
type Decision struct {
	Ranked   []Ranked
	Rejected []Rejected
	// Examined counts the candidates filtered; fewer than offered when a
	// sampled framework found enough feasible ones.
	Examined int

	components []int64 // backing store of Ranked[i].Components
}

// decisions recycles Decision buffers between placements: a dispatch
// decision's buffers are the bulk of its garbage.
var decisions = sync.Pool{New: func() any { return new(Decision) }}

// Release hands a decision's buffers back for reuse. Call it only when
// nothing of the decision (Ranked, Components, candidates' pointers) is
// kept.
func (f *Framework) Release(d *Decision) {
	if d != nil {
		decisions.Put(d)
	}
}

// Best returns the winner, if any.
func (d *Decision) Best() (*Candidate, bool) {
	if len(d.Ranked) == 0 {
		return nil, false
	}
	return d.Ranked[0].Candidate, true
}

// ErrNoCandidates is wrapped when no candidate passes the filters.
var ErrNoCandidates = errors.New("no pool can take the task")

// Hints are what the caller knows that a decision may use.
type Hints struct {
	// AffinityPool is the key of the pool that served the request's
	// session last ("" if none).
	AffinityPool string
	// TaskTokens is the fleet's mean task length, for requests without
	// max_tokens (0: DefaultTaskTokens).
	TaskTokens int
	// Prior is the speed assumed of pools never measured (zero fields:
	// the defaults).
	Prior Speed
	// TTFTWeight weighs time to first token against latency (0: the
	// default).
	TTFTWeight float64
}

// Schedule filters and scores candidates for req.
func (f *Framework) Schedule(now time.Time, req *Request, cands []Candidate, hints Hints) (*Decision, error) {
	state := &State{Now: now, StaleAfter: f.stale, AffinityPool: hints.AffinityPool, TaskTokens: hints.TaskTokens, Prior: hints.Prior, TTFTWeight: hints.TTFTWeight}
	if len(req.AvoidPools) > 0 {
		state.avoid = newPoolSet(req.AvoidPools)
	}
	if len(req.PreferPools) > 0 {
		state.prefer = newPoolSet(req.PreferPools)
	}
	n := len(cands)
	want, start := n, 0
	if f.sample && n > 0 {
		want = FeasibleToFind(n)
		start = int(f.next.Load() % uint64(n))
	}
	d := decisions.Get().(*Decision)
	d.Ranked, d.Rejected = d.Ranked[:0], d.Rejected[:0]
	examined := 0
	for ; examined < n && len(d.Ranked) < want; examined++ {
		idx := start + examined
		if idx >= n {
			idx -= n
		}
		c := &cands[idx]
		if plugin, st := f.runFilters(state, req, c); st != nil {
			if st.Err != nil {
				return nil, fmt.Errorf("filter %s on %s: %w", plugin, c.Key(), st.Err)
			}
			if !f.sample { // dispatch needs no list of rejections; explain does
				d.Rejected = append(d.Rejected, Rejected{Candidate: c, Plugin: plugin, Reason: st.Reason})
			}
			continue
		}
		est := state.Estimate(req, c)
		d.Ranked = append(d.Ranked, Ranked{Candidate: c, Estimate: est})
		if state.BestCost <= 0 || est.Cost < state.BestCost {
			state.BestCost = est.Cost
		}
	}
	if f.sample {
		f.next.Add(uint64(examined))
	}
	d.Examined = examined
	if need := len(d.Ranked) * len(f.scorers); cap(d.components) < need {
		d.components = make([]int64, need)
	} else {
		d.components = d.components[:need]
	}
	components := d.components
	for i := range d.Ranked {
		c := d.Ranked[i].Candidate
		comp := components[i*len(f.scorers) : (i+1)*len(f.scorers)]
		var total int64
		for j, ws := range f.scorers {
			s, st := ws.Plugin.Score(state, req, c)
			if st != nil && st.Err != nil {
				return nil, fmt.Errorf("score %s on %s: %w", ws.Plugin.Name(), c.Key(), st.Err)
			}
			if s < 0 || s > MaxScore {
				return nil, fmt.Errorf("score %s on %s: %d out of 0..%d", ws.Plugin.Name(), c.Key(), s, MaxScore)
			}
			comp[j] = s * ws.Weight
			total += comp[j]
		}
		d.Ranked[i].Total, d.Ranked[i].Components = total, comp
	}
	if f.sample {
		// Dispatch needs the winner and the runner-up only: select them
		// in one pass instead of sorting the sample.
		selectTop2(d.Ranked)
	} else {
		sortRanked(d.Ranked)
	}
	if len(d.Ranked) == 0 {
		return d, fmt.Errorf("%w: %d rejected", ErrNoCandidates, d.Examined)
	}
	return d, nil
}

// selectTop2 moves the best two candidates to the front, in order; the
// rest stay unordered.
func selectTop2(r []Ranked) {
	for k := 0; k < 2 && k < len(r); k++ {
		best := k
		for i := k + 1; i < len(r); i++ {
			if better(&r[i], &r[best]) {
				best = i
			}
		}
		r[k], r[best] = r[best], r[k]
	}
}

func sortRanked(r []Ranked) {
	slices.SortFunc(r, func(a, b Ranked) int {
		switch {
		case better(&a, &b):
			return -1
		case better(&b, &a):
			return 1
		}
		return 0
	})
}

// AnyFeasible reports whether some candidate passes every filter; it
// stops at the first (admission asks "could this task ever run?").
func (f *Framework) AnyFeasible(now time.Time, req *Request, cands []Candidate) bool {
	state := &State{Now: now, StaleAfter: f.stale}
	if len(req.AvoidPools) > 0 {
		state.avoid = newPoolSet(req.AvoidPools)
	}
	if len(req.PreferPools) > 0 {
		state.prefer = newPoolSet(req.PreferPools)
	}
	for i := range cands {
		if _, st := f.runFilters(state, req, &cands[i]); st == nil {
			return true
		}
	}
	return false
}

func (f *Framework) runFilters(state *State, req *Request, c *Candidate) (string, *Status) {
	for _, p := range f.filters {
		if st := p.Filter(state, req, c); st != nil {
			return p.Name(), st
		}
	}
	return "", nil
}

// better orders by total score, then the deterministic tie-break: lower
// expected latency, more free slots, then node id, pool id, replica id.
func better(a, b *Ranked) bool {
	if a.Total != b.Total {
		return a.Total > b.Total
	}
	if a.Estimate.Cost != b.Estimate.Cost {
		return a.Estimate.Cost < b.Estimate.Cost
	}
	if fa, fb := a.Candidate.FreeSlots(), b.Candidate.FreeSlots(); fa != fb {
		return fa > fb
	}
	if a.Candidate.NodeID != b.Candidate.NodeID {
		return a.Candidate.NodeID < b.Candidate.NodeID
	}
	if a.Candidate.Pool.PoolID != b.Candidate.Pool.PoolID {
		return a.Candidate.Pool.PoolID < b.Candidate.Pool.PoolID
	}
	return a.Candidate.ReplicaID < b.Candidate.ReplicaID
}

// ratioScore maps v in [lo, hi] linearly onto 0..100, lower is better when
// invert is set. NaN gives the neutral 50.
func ratioScore(v, lo, hi float64, invert bool) int64 {
	if math.IsNaN(v) || hi <= lo {
		return MaxScore / 2
	}
	r := (v - lo) / (hi - lo)
	r = math.Max(0, math.Min(1, r))
	if invert {
		r = 1 - r
	}
	return int64(math.Round(r * MaxScore))
}
