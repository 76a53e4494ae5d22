package scheduler

import (
	"math"
	"time"
)

// Speed is what a pool has shown of its speed: learned online from the
// tasks it completed, else seeded from its engine's own counters, else a
// prior (the fleet's typical pool). The dispatcher keeps it; the estimator
// reads it.
type Speed struct {
	// DecodeTPS is one slot's generation speed, tokens/s.
	DecodeTPS float64
	// PrefillTPS is the prompt processing speed, tokens/s.
	PrefillTPS float64
	// FirstToken is the engine's time to first token beyond prefill: the
	// request's way in, scheduling, the first decode step.
	FirstToken time.Duration
	// Service is how long a task holds one of the pool's slots, on
	// average over the tasks it ran (the work ahead of a queued task).
	Service time.Duration
	// Samples counts the completed tasks learned from; 0 is a prior or a
	// seed.
	Samples int
}

// Speed sources, as explanations name them.
const (
	SpeedLearned = "learned" // from tasks this control plane ran
	SpeedEngine  = "engine"  // the engine's llamacpp:* counters
	SpeedPrior   = "prior"   // nothing known of this pool yet
)

// Defaults for a fleet nothing is known of: llama-server's rates for a small
// model on a modest GPU. They only order pools nobody has measured; the
// first completed task replaces them.
const (
	DefaultDecodeTPS  = 50
	DefaultPrefillTPS = 1000
	DefaultFirstToken = 20 * time.Millisecond
	// DefaultTaskTokens stands for a task that sets no max_tokens, until
	// the fleet's mean is learned.
	DefaultTaskTokens = 128
	// DefaultTTFTWeight is how much more the first token counts than the
	// rest of the answer (see Estimate.Cost): a task waits for a faster
	// pool only if its answer would end six times the wait sooner there.
	// Chosen by make bench-placement: 3 let tasks wait up to ~60 ms at
	// half load, longer than nginx least_conn's p99 time to first token on
	// the four-node fleet; 5 beat it in every cell, end-to-end p99 intact.
	DefaultTTFTWeight = 5.0
)

// Estimate is a pool's expected latency for one task.
type Estimate struct {
	// Wait is until a slot frees for the task: zero when one is free, else
	// the work queued ahead of it over the pool's slots.
	Wait time.Duration
	// TTFT is Wait plus prefill of the task's prompt and the first token.
	TTFT time.Duration
	// Latency is TTFT plus generating the rest of the task's tokens.
	Latency time.Duration
	// Cost is what placement minimises: Latency plus TTFT weighted by
	// State.TTFTWeight, the two a streaming client sees. Latency alone
	// would let tasks queue for a fast pool until waiting there is as slow
	// as a slower pool's free slot; weighing the first token starts them
	// sooner, unless the faster pool saves TTFTWeight times the wait.
	Cost time.Duration
	// Source says where the speeds came from (SpeedLearned, ...).
	Source string
}

// speedOf picks the best-known speed of c: learned, else the engine's
// counters (as freshly scraped, else as its heartbeat reported them), else
// the fleet's prior (or the defaults).
func speedOf(state *State, c *Candidate) (Speed, string) {
	if c.Speed.Samples > 0 {
		return c.Speed, SpeedLearned
	}
	s, src := state.Prior, SpeedPrior
	if c.Reported.DecodeTPS > 0 {
		s.DecodeTPS, s.Service, src = c.Reported.DecodeTPS, 0, SpeedEngine
	}
	if c.Reported.PrefillTPS > 0 {
		s.PrefillTPS = c.Reported.PrefillTPS
	}
	if state.Fresh(c.Util) {
		if r := c.Util.TokenRate; r > 0 && !math.IsNaN(r) {
			s.DecodeTPS, src = r, SpeedEngine
			// The prior's service time was for the prior's speed.
			s.Service = 0
		}
		if r := c.Util.PromptRate; r > 0 && !math.IsNaN(r) {
			s.PrefillTPS = r
		}
	}
	return s, src
}

// Estimate predicts req's wait, time to first token and latency on c,
// queued behind c.Load() tasks.
func (state *State) Estimate(req *Request, c *Candidate) Estimate {
	s, src := speedOf(state, c)
	decode := positive(s.DecodeTPS, DefaultDecodeTPS)
	prefill := positive(s.PrefillTPS, DefaultPrefillTPS)
	first := s.FirstToken
	if first <= 0 {
		first = DefaultFirstToken
	}
	tokens := req.MaxTokens
	if tokens <= 0 {
		tokens = state.TaskTokens
	}
	if tokens <= 0 {
		tokens = DefaultTaskTokens
	}
	engineTTFT := first + seconds(float64(req.PromptTokens)/prefill)
	gen := seconds(float64(max(0, tokens-1)) / decode)
	var wait time.Duration
	if slots := max(1, c.Pool.SlotsTotal); c.Load() >= slots {
		service := s.Service
		if service <= 0 {
			// Nothing measured: a task like this one.
			service = engineTTFT + gen
		}
		// The tasks beyond the slots wait their turn; a task that finds
		// every slot busy waits on average for the first of them to end.
		ahead := c.Load() - slots + 1
		wait = time.Duration(float64(service) * float64(ahead) / float64(slots))
	}
	ttft := wait + engineTTFT
	w := state.TTFTWeight
	if w <= 0 {
		w = DefaultTTFTWeight
	}
	return Estimate{Wait: wait, TTFT: ttft, Latency: ttft + gen, Cost: time.Duration(w*float64(ttft)) + ttft + gen, Source: src}
}

func positive(v, fallback float64) float64 {
	if v > 0 && !math.IsNaN(v) && !math.IsInf(v, 0) {
		return v
	}
	return fallback
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// ExpectedLatency ranks pools by the task's expected time to first token
// plus end-to-end latency (Estimate.Cost): the best scores 100, one twice
// as costly 50. It is what decides placement by default; other scorers
// adjust.
type ExpectedLatency struct{}

var _ ScorePlugin = ExpectedLatency{}

// Name implements ScorePlugin.
func (ExpectedLatency) Name() string { return ExpectedLatencyName }

// Score implements ScorePlugin.
func (ExpectedLatency) Score(state *State, req *Request, c *Candidate) (int64, *Status) {
	est := state.Estimate(req, c)
	if state.BestCost <= 0 || est.Cost <= 0 {
		return MaxScore, nil
	}
	return int64(math.Round(MaxScore * float64(state.BestCost) / float64(est.Cost))), nil
}
