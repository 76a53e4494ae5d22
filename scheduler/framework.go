package scheduler

import (
	"errors"
	"fmt"
	"math"
	"sort"
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

// Scorers returns the scorers with their weights, for explanations.
func (f *Framework) Scorers() []WeightedScorer { return f.scorers }

// Ranked is one feasible candidate with its score components.
type Ranked struct {
	Candidate *Candidate
	Total     int64
	// Components are the weighted scores, in the framework's scorer order.
	Components []int64
}

// Rejected is one infeasible candidate and why.
type Rejected struct {
	Candidate *Candidate
	Plugin    string
	Reason    string
}

// Decision is a placement: candidates ranked best first.
type Decision struct {
	Ranked   []Ranked
	Rejected []Rejected
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

// Schedule filters and scores candidates for req. affinityPool is the key
// of the pool that served req's session last ("" if none).
func (f *Framework) Schedule(now time.Time, req *Request, cands []Candidate, affinityPool string) (*Decision, error) {
	state := &State{Now: now, StaleAfter: f.stale, AffinityPool: affinityPool}
	if len(req.AvoidPools) > 0 {
		state.avoid = newPoolSet(req.AvoidPools)
	}
	if len(req.PreferPools) > 0 {
		state.prefer = newPoolSet(req.PreferPools)
	}
	d := &Decision{Ranked: make([]Ranked, 0, len(cands))}
	for i := range cands {
		c := &cands[i]
		if plugin, st := f.runFilters(state, req, c); st != nil {
			if st.Err != nil {
				return nil, fmt.Errorf("filter %s on %s: %w", plugin, c.Key(), st.Err)
			}
			d.Rejected = append(d.Rejected, Rejected{Candidate: c, Plugin: plugin, Reason: st.Reason})
			continue
		}
		d.Ranked = append(d.Ranked, Ranked{Candidate: c})
		if state.Fresh(c.Util) && !math.IsNaN(c.Util.TokenRate) {
			state.MaxTokenRate = math.Max(state.MaxTokenRate, c.Util.TokenRate)
		}
	}
	components := make([]int64, len(d.Ranked)*len(f.scorers))
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
	sort.Slice(d.Ranked, func(i, j int) bool { return better(&d.Ranked[i], &d.Ranked[j]) })
	if len(d.Ranked) == 0 {
		return d, fmt.Errorf("%w: %d rejected", ErrNoCandidates, len(d.Rejected))
	}
	return d, nil
}

func (f *Framework) runFilters(state *State, req *Request, c *Candidate) (string, *Status) {
	for _, p := range f.filters {
		if st := p.Filter(state, req, c); st != nil {
			return p.Name(), st
		}
	}
	return "", nil
}

// better orders by total score, then the deterministic tie-break: more free
// slots, then node id, then pool id.
func better(a, b *Ranked) bool {
	if a.Total != b.Total {
		return a.Total > b.Total
	}
	if fa, fb := a.Candidate.FreeSlots(), b.Candidate.FreeSlots(); fa != fb {
		return fa > fb
	}
	if a.Candidate.NodeID != b.Candidate.NodeID {
		return a.Candidate.NodeID < b.Candidate.NodeID
	}
	return a.Candidate.Pool.PoolID < b.Candidate.Pool.PoolID
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
