package agent_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

const h200Bytes = 141 << 30

// simPoller has polled two simulated H200s once, GPU 1 carrying an engine;
// its readings go stale after maxAge.
func simPoller(t *testing.T, maxAge time.Duration) *exporter.Poller {
	t.Helper()
	specs, err := exporter.ParseSimGPUs("2xH200:141GiB")
	if err != nil {
		t.Fatal(err)
	}
	load := func() []exporter.SimLoad { return []exporter.SimLoad{{GPUs: []int{1}, VRAMBytes: 8 << 30, Busy: 0.5}} }
	p := exporter.NewPoller(exporter.NewSimSource("node-a", specs, load), time.Hour, maxAge)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	p.WaitFirst(context.Background())
	cancel()
	<-done
	return p
}

// TestInventory runs in a synctest bubble: the readings go stale on the
// bubble's fake clock, so the sleep past maxAge below takes no time.
func TestInventory(t *testing.T) { synctest.Test(t, testInventory) }

func testInventory(t *testing.T) {
	const maxAge = time.Second
	p := simPoller(t, maxAge)
	inv := agent.NewInventory(p)

	info := inv.GPUInfo()
	if len(info) != 2 {
		t.Fatalf("GPUInfo = %+v", info)
	}
	for i, g := range info {
		if g.DeviceID != i || g.VRAMTotalBytes != h200Bytes || !strings.Contains(g.Name, "H200") || g.UUID == "" || g.ComputeCapability == "" {
			t.Errorf("GPUInfo[%d] = %+v", i, g)
		}
	}

	snap, _ := p.Current()
	free0, free1 := uint64(snap.GPUs[0].MemoryFreeBytes), uint64(snap.GPUs[1].MemoryFreeBytes)
	if free1 != free0-8<<30 {
		t.Fatalf("free %d and %d: GPU 1 should have 8 GiB less", free0, free1)
	}
	state := inv.GPUState()
	if len(state) != 2 || state[0].DeviceID != 0 || state[0].VRAMFreeBytes != free0 || state[0].Utilization != 0 ||
		state[1].DeviceID != 1 || state[1].VRAMFreeBytes != free1 || state[1].Utilization != 0.5 {
		t.Fatalf("GPUState = %+v", state)
	}

	for _, tt := range []struct {
		mask        string
		total, free uint64
	}{
		{"", 2 * h200Bytes, free0 + free1},
		{"1", h200Bytes, free1},
		{"GPU0", h200Bytes, free0},
		{"0,1", 2 * h200Bytes, free0 + free1},
	} {
		total, free, ok := inv.PoolVRAM(tt.mask)
		if !ok || total != tt.total || free != tt.free {
			t.Errorf("PoolVRAM(%q) = %d, %d, %v; want %d, %d", tt.mask, total, free, ok, tt.total, tt.free)
		}
	}

	// Stale readings are no readings.
	time.Sleep(maxAge + time.Nanosecond)
	if len(inv.GPUInfo()) != 0 || len(inv.GPUState()) != 0 {
		t.Fatal("stale readings reported")
	}
	if _, _, ok := inv.PoolVRAM(""); ok {
		t.Fatal("PoolVRAM ok on stale readings")
	}
}

func TestInventoryWithoutSource(t *testing.T) {
	for name, inv := range map[string]*agent.Inventory{"nil poller": agent.NewInventory(nil), "nil inventory": nil} {
		t.Run(name, func(t *testing.T) {
			// Empty, not nil: they are sent as JSON arrays.
			if info := inv.GPUInfo(); info == nil || len(info) != 0 {
				t.Errorf("GPUInfo = %#v", info)
			}
			if state := inv.GPUState(); state == nil || len(state) != 0 {
				t.Errorf("GPUState = %#v", state)
			}
			if total, free, ok := inv.PoolVRAM(""); ok || total != 0 || free != 0 {
				t.Errorf("PoolVRAM = %d, %d, %v", total, free, ok)
			}
		})
	}
}

// TestPoolsWithVRAM: each pool gets its device mask's GPU memory; without
// GPUs, or without fresh readings, none.
func TestPoolsWithVRAM(t *testing.T) {
	tab := pool.NewTable([]string{"all", "one"})
	tab.Upsert("/rt/all_r0.json", handoff.Handoff{PoolID: "all", URL: "http://127.0.0.1:1", EngineVersion: "v", SlotsTotal: 1})
	tab.Upsert("/rt/one_r0.json", handoff.Handoff{PoolID: "one", URL: "http://127.0.0.1:2", EngineVersion: "v", SlotsTotal: 1, DeviceMask: "1"})
	inv := agent.NewInventory(simPoller(t, time.Hour))
	ps := agent.PoolsWithVRAM{Pools: tab, GPUs: inv}.Snapshot()
	_, free1, _ := inv.PoolVRAM("1")
	if len(ps) != 2 || ps[0].VRAMTotalBytes != 2*h200Bytes || ps[1].VRAMTotalBytes != h200Bytes || ps[1].VRAMFreeBytes != free1 {
		t.Fatalf("pools = %+v", ps)
	}
	for name, gpus := range map[string]agent.GPUReporter{"no GPUs": nil, "no readings": agent.NewInventory(nil)} {
		for _, p := range (agent.PoolsWithVRAM{Pools: tab, GPUs: gpus}).Snapshot() {
			if p.VRAMTotalBytes != 0 || p.VRAMFreeBytes != 0 {
				t.Errorf("%s: pool %s reports VRAM %d/%d", name, p.PoolID, p.VRAMFreeBytes, p.VRAMTotalBytes)
			}
		}
	}
}
