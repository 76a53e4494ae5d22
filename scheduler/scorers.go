package scheduler

import (
	"math"
)

// Score plugin names, as --score-weights spells them.
const (
	FreeSlotsName       = "free-slots"
	EngineQueueName     = "engine-queue"
	GPUUtilizationName  = "gpu-utilization"
	FreeVRAMName        = "free-vram"
	TokenRateName       = "token-rate"
	SessionAffinityName = "session-affinity"
	PreferName          = "prefer"
)

// FreeSlots prefers pools with a larger share of free slots (registry state
// corrected by this control plane's in-flight tasks).
type FreeSlots struct{}

var _ ScorePlugin = FreeSlots{}

// Name implements ScorePlugin.
func (FreeSlots) Name() string { return FreeSlotsName }

// Score implements ScorePlugin.
func (FreeSlots) Score(_ *State, _ *Request, c *Candidate) (int64, *Status) {
	if c.Pool.SlotsTotal == 0 {
		return 0, nil
	}
	return ratioScore(float64(c.FreeSlots()), 0, float64(c.Pool.SlotsTotal), false), nil
}

// EngineQueue prefers engines with fewer requests processing and deferred,
// relative to their slots. Without fresh metrics it falls back to the
// registry's busy slots.
type EngineQueue struct{}

var _ ScorePlugin = EngineQueue{}

// Name implements ScorePlugin.
func (EngineQueue) Name() string { return EngineQueueName }

// Score implements ScorePlugin.
func (EngineQueue) Score(state *State, _ *Request, c *Candidate) (int64, *Status) {
	slots := float64(max(c.Pool.SlotsTotal, 1))
	load := float64(c.Pool.SlotsTotal - c.FreeSlots())
	if state.Fresh(c.Util) {
		// The engine's own view, plus what we dispatched since it was read.
		load = math.Max(load, c.Util.RequestsProcessing+c.Util.RequestsDeferred)
	}
	// Full slots score 50 less than empty; a queue as deep again, 0.
	return ratioScore(load, 0, 2*slots, true), nil
}

// GPUUtilization prefers idle GPUs: scraped, else the heartbeat's, else
// neutral.
type GPUUtilization struct{}

var _ ScorePlugin = GPUUtilization{}

// Name implements ScorePlugin.
func (GPUUtilization) Name() string { return GPUUtilizationName }

// Score implements ScorePlugin.
func (GPUUtilization) Score(state *State, _ *Request, c *Candidate) (int64, *Status) {
	u := math.NaN()
	switch {
	case state.Fresh(c.Util) && !math.IsNaN(c.Util.GPUUtilization):
		u = c.Util.GPUUtilization
	case len(c.GPUs) > 0:
		var sum float64
		for _, g := range c.GPUs {
			sum += g.Utilization
		}
		u = sum / float64(len(c.GPUs))
	}
	return ratioScore(u, 0, 1, true), nil
}

// FreeVRAM prefers pools whose GPUs have a larger share of memory free.
type FreeVRAM struct{}

var _ ScorePlugin = FreeVRAM{}

// Name implements ScorePlugin.
func (FreeVRAM) Name() string { return FreeVRAMName }

// Score implements ScorePlugin.
func (FreeVRAM) Score(state *State, _ *Request, c *Candidate) (int64, *Status) {
	free, ok := freeVRAM(state, c)
	if !ok || c.Pool.VRAMTotalBytes == 0 {
		return MaxScore / 2, nil
	}
	return ratioScore(free, 0, float64(c.Pool.VRAMTotalBytes), false), nil
}

// TokenRate prefers engines that generate faster per slot, relative to the
// fastest candidate. Unknown speed is neutral.
type TokenRate struct{}

var _ ScorePlugin = TokenRate{}

// Name implements ScorePlugin.
func (TokenRate) Name() string { return TokenRateName }

// Score implements ScorePlugin.
func (TokenRate) Score(state *State, _ *Request, c *Candidate) (int64, *Status) {
	if !state.Fresh(c.Util) || math.IsNaN(c.Util.TokenRate) || state.MaxTokenRate <= 0 {
		return MaxScore / 2, nil
	}
	return ratioScore(c.Util.TokenRate, 0, state.MaxTokenRate, false), nil
}

// SessionAffinity sends a session's next task to the pool that holds its
// KV cache.
type SessionAffinity struct{}

var _ ScorePlugin = SessionAffinity{}

// Name implements ScorePlugin.
func (SessionAffinity) Name() string { return SessionAffinityName }

// Score implements ScorePlugin.
func (SessionAffinity) Score(state *State, _ *Request, c *Candidate) (int64, *Status) {
	if state.AffinityPool != "" && c.hasKey(state.AffinityPool) {
		return MaxScore, nil
	}
	return 0, nil
}

// Prefer favours the task's prefer_pools and, in prefer mode, its node_id
// (which the Placement filter does not enforce when fallback is allowed).
// A candidate meeting half of what the task asked for scores half.
type Prefer struct{}

var _ ScorePlugin = Prefer{}

// Name implements ScorePlugin.
func (Prefer) Name() string { return PreferName }

// Score implements ScorePlugin.
func (Prefer) Score(state *State, req *Request, c *Candidate) (int64, *Status) {
	var asked, met int64
	if !state.prefer.empty() {
		asked++
		if state.prefers(c) {
			met++
		}
	}
	if req.Mode == "prefer" && req.NodeID != "" {
		asked++
		if c.NodeID == req.NodeID {
			met++
		}
	}
	if asked == 0 {
		return 0, nil
	}
	return MaxScore * met / asked, nil
}
