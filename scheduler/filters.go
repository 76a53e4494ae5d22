package scheduler

import (
	"slices"
	"time"

	"github.com/llorch/llorch/api"
)

// Filter plugin names, as flags and explanations spell them.
const (
	ReadyName      = "ready"
	ModelName      = "model"
	PlacementName  = "placement"
	DeviceMaskName = "device-mask"
	QuarantineName = "quarantine"
)

// The built-in filters' verdicts, built once so that rejecting a candidate
// does not allocate. They are shared: never modify one.
var (
	unfitNodeNotOnline         = Unfit("node not online")
	unfitNodeDraining          = Unfit("node draining")
	unfitPoolDraining          = Unfit("pool draining")
	unfitPoolNotReady          = Unfit("pool not ready")
	unfitModelNotServed        = Unfit("model not served")
	unfitAvoidedByTheTask      = Unfit("avoided by the task")
	unfitNotTheRequestedNode   = Unfit("not the requested node")
	unfitNotThePinnedPool      = Unfit("not the pinned pool")
	unfitNotAPreferredPool     = Unfit("not a preferred pool")
	unfitDeviceMaskDiffers     = Unfit("device mask differs")
	unfitRecentDispatchFailure = Unfit("recent dispatch failure")
)

// Ready keeps pools that are ready, not draining, on online nodes. A
// draining node (its agent is shutting down) is told apart from an offline
// one, so explanations say why its pools take no work.
type Ready struct{}

var _ FilterPlugin = Ready{}

// Name implements FilterPlugin.
func (Ready) Name() string { return ReadyName }

// Filter implements FilterPlugin.
func (Ready) Filter(_ *State, _ *Request, c *Candidate) *Status {
	switch {
	case c.NodeStatus == api.StatusDraining:
		return unfitNodeDraining
	case c.NodeStatus != api.StatusOnline:
		return unfitNodeNotOnline
	case c.Pool.Draining:
		return unfitPoolDraining
	case !c.Pool.Ready:
		return unfitPoolNotReady
	}
	return nil
}

// Model keeps pools that serve the requested model.
type Model struct{}

var _ FilterPlugin = Model{}

// Name implements FilterPlugin.
func (Model) Name() string { return ModelName }

// Filter implements FilterPlugin.
func (Model) Filter(_ *State, req *Request, c *Candidate) *Status {
	if req.Model == "" || slices.Contains(c.Pool.Models, req.Model) {
		return nil
	}
	return unfitModelNotServed
}

// Placement applies the task's pin, node, prefer-only and avoid constraints.
type Placement struct{}

var _ FilterPlugin = Placement{}

// Name implements FilterPlugin.
func (Placement) Name() string { return PlacementName }

// Filter implements FilterPlugin.
func (Placement) Filter(state *State, req *Request, c *Candidate) *Status {
	if state.avoid.has(c) {
		return unfitAvoidedByTheTask
	}
	nodeMayDiffer := req.Mode == "prefer" && req.AllowFallback
	if req.NodeID != "" && c.NodeID != req.NodeID && !nodeMayDiffer {
		return unfitNotTheRequestedNode
	}
	switch req.Mode {
	case "pin":
		if c.Pool.PoolID != req.PinPoolID {
			return unfitNotThePinnedPool
		}
	case "prefer":
		if !req.AllowFallback && !state.prefer.empty() && !state.prefers(c) {
			return unfitNotAPreferredPool
		}
	}
	return nil
}

// DeviceMask keeps pools on exactly the requested GPUs.
type DeviceMask struct{}

var _ FilterPlugin = DeviceMask{}

// Name implements FilterPlugin.
func (DeviceMask) Name() string { return DeviceMaskName }

// Filter implements FilterPlugin.
func (DeviceMask) Filter(_ *State, req *Request, c *Candidate) *Status {
	if req.DeviceMask == "" || req.DeviceMask == c.Pool.DeviceMask {
		return nil
	}
	return unfitDeviceMaskDiffers
}

// Quarantine drops pools whose last dispatch failed within Window, so tasks
// avoid a node that died mid-stream before its heartbeats time out.
type Quarantine struct{ Window time.Duration }

var _ FilterPlugin = Quarantine{}

// Name implements FilterPlugin.
func (Quarantine) Name() string { return QuarantineName }

// Filter implements FilterPlugin.
func (q Quarantine) Filter(state *State, _ *Request, c *Candidate) *Status {
	if !c.RecentFailure.IsZero() && state.Now.Sub(c.RecentFailure) < q.Window {
		return unfitRecentDispatchFailure
	}
	return nil
}
