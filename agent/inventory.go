package agent

import (
	"math"
	"slices"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/pool"
)

// Inventory turns the GPU poller's snapshot into what registration and
// heartbeats carry. A nil poller, or a stale snapshot, reports no GPUs:
// missing data is never reported as full or empty GPUs.
type Inventory struct {
	poller *exporter.Poller
}

var _ GPUReporter = (*Inventory)(nil)

// NewInventory reads p (which may be nil).
func NewInventory(p *exporter.Poller) *Inventory { return &Inventory{poller: p} }

func (inv *Inventory) gpus() []exporter.GPU {
	if inv == nil || inv.poller == nil {
		return nil
	}
	snap, fresh := inv.poller.Current()
	if !fresh {
		return nil
	}
	return snap.GPUs
}

// GPUInfo is the registration inventory.
func (inv *Inventory) GPUInfo() []api.GPUInfo {
	gpus := inv.gpus()
	out := make([]api.GPUInfo, 0, len(gpus))
	for _, g := range gpus {
		out = append(out, api.GPUInfo{DeviceID: g.Index, UUID: g.UUID, Name: g.Name,
			VRAMTotalBytes: bytesOf(g.MemoryTotalBytes), ComputeCapability: g.ComputeCapability})
	}
	return out
}

// GPUState is the heartbeat's live per-GPU state.
func (inv *Inventory) GPUState() []api.GPUState {
	gpus := inv.gpus()
	out := make([]api.GPUState, 0, len(gpus))
	for _, g := range gpus {
		u := g.Utilization
		if math.IsNaN(u) {
			u = 0
		}
		out = append(out, api.GPUState{DeviceID: g.Index, VRAMFreeBytes: bytesOf(g.MemoryFreeBytes), Utilization: u})
	}
	return out
}

// PoolVRAM sums total and free memory over a device mask's GPUs (all GPUs
// for an empty mask). ok is false when there are no fresh readings.
func (inv *Inventory) PoolVRAM(mask string) (total, free uint64, ok bool) {
	gpus := inv.gpus()
	if len(gpus) == 0 {
		return 0, 0, false
	}
	want := api.DeviceIndices(mask)
	for _, g := range gpus {
		if len(want) > 0 && !slices.Contains(want, g.Index) {
			continue
		}
		total += bytesOf(g.MemoryTotalBytes)
		free += bytesOf(g.MemoryFreeBytes)
	}
	return total, free, true
}

func bytesOf(v float64) uint64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return uint64(v)
}

// PoolsWithVRAM is the pool table as heartbeats and the exporter's pools
// collector report it: each pool's GPU memory (its device mask's GPUs) is
// filled in where the GPUs have fresh readings. It is the one place pool
// VRAM is computed.
type PoolsWithVRAM struct {
	Pools *pool.Table
	// GPUs may be nil: no pool then reports VRAM.
	GPUs GPUReporter
}

var _ exporter.PoolLister = PoolsWithVRAM{}

// Snapshot implements exporter.PoolLister.
func (v PoolsWithVRAM) Snapshot() []api.PoolState {
	ps := v.Pools.Snapshot()
	if v.GPUs == nil {
		return ps
	}
	for i := range ps {
		if total, free, ok := v.GPUs.PoolVRAM(ps[i].DeviceMask); ok {
			ps[i].VRAMTotalBytes, ps[i].VRAMFreeBytes = total, free
		}
	}
	return ps
}
