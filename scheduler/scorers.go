package scheduler

import (
	"math"
)

// Score plugin names, as --score-weights spells them.
const (
	ExpectedLatencyName = "expected-latency"
	GPUUtilizationName  = "gpu-utilization"
	FreeVRAMName        = "free-vram"
	SessionAffinityName = "session-affinity"
	PreferName          = "prefer"
)

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

// freeVRAM is the freshest free-memory figure: scraped, else the heartbeat's.
func freeVRAM(state *State, c *Candidate) (float64, bool) {
	if state.Fresh(c.Util) && !math.IsNaN(c.Util.FreeVRAMBytes) {
		return c.Util.FreeVRAMBytes, true
	}
	if c.Pool.VRAMTotalBytes > 0 {
		return float64(c.Pool.VRAMFreeBytes), true
	}
	return 0, false
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
