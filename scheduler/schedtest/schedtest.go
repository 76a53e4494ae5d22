// Package schedtest builds scheduler candidates for tests, in the manner of
// the Kubernetes scheduler's st.MakePod() wrappers:
//
//	schedtest.Pool("pool-0").Node("n1").Slots(4, 1).Models("m").Obj()
//
// A new wrapper is a feasible candidate: an online node, a ready pool with
// one free slot, no metrics. Each method sets one thing and returns the
// wrapper; Obj returns a copy, so one wrapper can stamp out many candidates.
package schedtest

import (
	"math"
	"slices"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
)

// CandidateWrapper builds a scheduler.Candidate.
type CandidateWrapper struct{ c scheduler.Candidate }

// Pool starts a candidate for pool id on node "n1".
func Pool(id string) *CandidateWrapper {
	return &CandidateWrapper{c: scheduler.Candidate{
		NodeID:     "n1",
		NodeStatus: api.StatusOnline,
		Pool:       api.PoolState{PoolID: id, Ready: true, SlotsTotal: 1, SlotsFree: 1},
	}}
}

// Node sets the node id.
func (w *CandidateWrapper) Node(id string) *CandidateWrapper { w.c.NodeID = id; return w }

// Replica makes the candidate one replica of its pool.
func (w *CandidateWrapper) Replica(id string) *CandidateWrapper { w.c.ReplicaID = id; return w }

// NodeStatus sets the node's status (api.StatusOnline, ...).
func (w *CandidateWrapper) NodeStatus(s string) *CandidateWrapper { w.c.NodeStatus = s; return w }

// NotReady marks the pool not ready.
func (w *CandidateWrapper) NotReady() *CandidateWrapper { w.c.Pool.Ready = false; return w }

// Draining marks the pool draining.
func (w *CandidateWrapper) Draining() *CandidateWrapper { w.c.Pool.Draining = true; return w }

// Slots sets the slots the heartbeat reported: total and free.
func (w *CandidateWrapper) Slots(total, free int) *CandidateWrapper {
	w.c.Pool.SlotsTotal, w.c.Pool.SlotsFree = total, free
	return w
}

// InFlight sets the tasks this control plane has running on the pool.
func (w *CandidateWrapper) InFlight(n int) *CandidateWrapper { w.c.InFlight = n; return w }

// Foreign sets the load the engines reported beyond this control plane's.
func (w *CandidateWrapper) Foreign(n int) *CandidateWrapper { w.c.Foreign = n; return w }

// Reported sets the speed the engine's heartbeat reported.
func (w *CandidateWrapper) Reported(s scheduler.Speed) *CandidateWrapper { w.c.Reported = s; return w }

// Speed sets the pool's learned speed.
func (w *CandidateWrapper) Speed(s scheduler.Speed) *CandidateWrapper { w.c.Speed = s; return w }

// Models sets the models the pool serves.
func (w *CandidateWrapper) Models(m ...string) *CandidateWrapper {
	w.c.Pool.Models = slices.Clone(m)
	return w
}

// DeviceMask sets the pool's device mask.
func (w *CandidateWrapper) DeviceMask(m string) *CandidateWrapper { w.c.Pool.DeviceMask = m; return w }

// GPUs sets the heartbeat's GPUs, device ids 0.., one per utilisation (0-1).
func (w *CandidateWrapper) GPUs(util ...float64) *CandidateWrapper {
	w.c.GPUs = make([]api.GPUState, len(util))
	for i, u := range util {
		w.c.GPUs[i] = api.GPUState{DeviceID: i, Utilization: u}
	}
	return w
}

// FreeVRAM sets the pool's VRAM as the heartbeat reported it.
func (w *CandidateWrapper) FreeVRAM(total, free uint64) *CandidateWrapper {
	w.c.Pool.VRAMTotalBytes, w.c.Pool.VRAMFreeBytes = total, free
	return w
}

// Util sets the scraped utilisation (see Util for a builder).
func (w *CandidateWrapper) Util(u scheduler.Utilization) *CandidateWrapper { w.c.Util = u; return w }

// Failed records a failed dispatch at t.
func (w *CandidateWrapper) Failed(t time.Time) *CandidateWrapper { w.c.RecentFailure = t; return w }

// Obj returns the candidate (a copy).
func (w *CandidateWrapper) Obj() scheduler.Candidate {
	c := w.c
	c.Pool.Models = slices.Clone(c.Pool.Models)
	c.GPUs = slices.Clone(c.GPUs)
	return c
}

// UtilWrapper builds a scheduler.Utilization.
type UtilWrapper struct{ u scheduler.Utilization }

// Util starts a reading taken at at, every optional field unknown (NaN)
// and an empty engine queue.
func Util(at time.Time) *UtilWrapper {
	return &UtilWrapper{u: scheduler.Utilization{
		At: at, GPUUtilization: math.NaN(), FreeVRAMBytes: math.NaN(), TokenRate: math.NaN(), PromptRate: math.NaN(),
	}}
}

// GPU sets the mean GPU utilisation, 0-1.
func (w *UtilWrapper) GPU(ratio float64) *UtilWrapper { w.u.GPUUtilization = ratio; return w }

// VRAM sets the scraped free VRAM.
func (w *UtilWrapper) VRAM(free float64) *UtilWrapper { w.u.FreeVRAMBytes = free; return w }

// Queue sets the engine's requests deferred and processing.
func (w *UtilWrapper) Queue(deferred, processing float64) *UtilWrapper {
	w.u.RequestsDeferred, w.u.RequestsProcessing = deferred, processing
	return w
}

// TokenRate sets one slot's generation speed, tokens/s.
func (w *UtilWrapper) TokenRate(r float64) *UtilWrapper { w.u.TokenRate = r; return w }

// PromptRate sets the engine's prompt processing speed, tokens/s.
func (w *UtilWrapper) PromptRate(r float64) *UtilWrapper { w.u.PromptRate = r; return w }

// Obj returns the reading.
func (w *UtilWrapper) Obj() scheduler.Utilization { return w.u }
