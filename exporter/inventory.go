package exporter

import (
	"math"

	"github.com/llorch/llorch/api"
)

// Inventory turns the GPU poller's snapshot into what registration and
// heartbeats carry. A nil poller, or a stale snapshot, reports no GPUs:
// missing data is never reported as full or empty GPUs.
type Inventory struct {
	poller *Poller
}

// NewInventory reads p (which may be nil).
func NewInventory(p *Poller) *Inventory { return &Inventory{poller: p} }

func (inv *Inventory) gpus() []GPU {
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
	want := DeviceIndices(mask)
	for _, g := range gpus {
		if len(want) > 0 && !contains(want, g.Index) {
			continue
		}
		total += bytesOf(g.MemoryTotalBytes)
		free += bytesOf(g.MemoryFreeBytes)
	}
	return total, free, true
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func bytesOf(v float64) uint64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return uint64(v)
}
