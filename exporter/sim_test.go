package exporter

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"
)

const h200Bytes = 141 << 30 // 151397597184

func TestParseSimGPUs(t *testing.T) {
	tests := []struct {
		in   string
		want []SimGPUSpec
	}{
		{"2xH200:141GiB", []SimGPUSpec{{2, "H200", h200Bytes}}},
		{"H100:80GB", []SimGPUSpec{{1, "H100", 80e9}}},
		{"1xL4:24GiB,2xA10:24GiB", []SimGPUSpec{{1, "L4", 24 << 30}, {2, "A10", 24 << 30}}},
		{" 1xL4:24GiB , 2xA10:24GiB ", []SimGPUSpec{{1, "L4", 24 << 30}, {2, "A10", 24 << 30}}},
		{"8xRTX_6000-Ada:47.5GiB", []SimGPUSpec{{8, "RTX_6000-Ada", 47.5 * (1 << 30)}}},
		{"T4:15360MiB", []SimGPUSpec{{1, "T4", 15360 << 20}}},
		{"GB200.x:1MB", []SimGPUSpec{{1, "GB200.x", 1e6}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSimGPUs(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseSimGPUsRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"H200",
		"2xH200",
		"H200:141",
		"H200:141TB",
		"H200:141gib",
		"0xH200:141GiB",
		"H200:0GiB",
		"H200:-1GiB",
		"2xH200:141GiB,",
		",2xH200:141GiB",
		"2xH200:141GiB;1xL4:24GiB",
		"H 200:141GiB",
		"H200:1e3GiB",
		// Too many to simulate: would hang the agent at start building them.
		"99999999999999999999xH200:141GiB",
		"1000000xH200:141GiB",
		"1000xH200:141GiB,100xL4:24GiB",
		// Too large to be a number.
		"H200:" + strings.Repeat("9", 400) + "GiB",
	} {
		t.Run(in, func(t *testing.T) {
			if got, err := ParseSimGPUs(in); err == nil {
				t.Fatalf("no error, got %+v", got)
			}
		})
	}
}

// simGPUs builds two simulated H200s reporting loads.
func simGPUs(t *testing.T, loads ...SimLoad) []GPU {
	t.Helper()
	specs, err := ParseSimGPUs("2xH200:141GiB")
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := NewSimSource("node-a", specs, func() []SimLoad { return loads }).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 2 {
		t.Fatalf("%d GPUs, want 2", len(gpus))
	}
	return gpus
}

func TestSimSourceIdle(t *testing.T) {
	specs := []SimGPUSpec{{2, "H200", h200Bytes}, {1, "L4", 24 << 30}}
	gpus, err := NewSimSource("node-a", specs, nil).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 3 {
		t.Fatalf("%d GPUs", len(gpus))
	}
	uuids := map[string]bool{}
	for i, g := range gpus {
		if g.Index != i || uuids[g.UUID] || !strings.HasPrefix(g.UUID, "GPU-") {
			t.Errorf("gpu %d: index %d uuid %q", i, g.Index, g.UUID)
		}
		uuids[g.UUID] = true
		reserved := math.Floor(g.MemoryTotalBytes * 615 / 143771)
		if g.MemoryUsedBytes != 0 || g.MemoryReservedBytes != reserved ||
			g.MemoryFreeBytes != g.MemoryTotalBytes-reserved || g.Utilization != 0 || g.ComputeProcesses != 0 {
			t.Errorf("idle gpu %d: %+v", i, g)
		}
	}
	if gpus[0].Name != "NVIDIA H200 (simulated)" || gpus[2].Name != "NVIDIA L4 (simulated)" || gpus[2].MemoryTotalBytes != 24<<30 {
		t.Errorf("identities: %q %q %v", gpus[0].Name, gpus[2].Name, gpus[2].MemoryTotalBytes)
	}
	// An idle simulated H200 reserves what the real one does (615 MiB of
	// 143,771), scaled to its size.
	if got := math.Round(gpus[0].MemoryReservedBytes / mib); got != 618 {
		t.Errorf("reserved %v MiB of 141 GiB", got)
	}

	// UUIDs are stable per node and differ between nodes.
	again, _ := NewSimSource("node-a", specs, nil).Read(context.Background())
	other, _ := NewSimSource("node-b", specs, nil).Read(context.Background())
	if again[1].UUID != gpus[1].UUID || other[1].UUID == gpus[1].UUID {
		t.Errorf("uuids: %s, again %s, other node %s", gpus[1].UUID, again[1].UUID, other[1].UUID)
	}
}

func TestSimSourceLoads(t *testing.T) {
	const gib = 1 << 30
	total := float64(h200Bytes)
	reserved := math.Floor(total * 615 / 143771)
	avail := total - reserved
	type want struct{ used, util, procs float64 }
	tests := []struct {
		name  string
		loads []SimLoad
		want  [2]want
	}{
		{"one engine on GPU 1",
			[]SimLoad{{GPUs: []int{1}, VRAMBytes: 10 * gib, Busy: 0.5}},
			[2]want{{0, 0, 0}, {10 * gib, 0.5, 1}}},
		{"split over its device mask",
			[]SimLoad{{GPUs: []int{0, 1}, VRAMBytes: 10 * gib, Busy: 1}},
			[2]want{{5 * gib, 1, 1}, {5 * gib, 1, 1}}},
		{"empty mask means every GPU",
			[]SimLoad{{VRAMBytes: 6 * gib, Busy: 0.25}},
			[2]want{{3 * gib, 0.25, 1}, {3 * gib, 0.25, 1}}},
		{"engines add up; utilisation is their mean busy share",
			[]SimLoad{{GPUs: []int{0}, VRAMBytes: 4 * gib, Busy: 1}, {GPUs: []int{0}, VRAMBytes: 2 * gib, Busy: 0.5}, {VRAMBytes: 2 * gib}},
			[2]want{{7 * gib, 0.5, 3}, {1 * gib, 0, 1}}},
		{"over-committed memory is clamped to what is there",
			[]SimLoad{{GPUs: []int{0}, VRAMBytes: 1000 * gib, Busy: 1}},
			[2]want{{avail, 1, 1}, {0, 0, 0}}},
		{"busy over 1 is clamped",
			[]SimLoad{{GPUs: []int{1}, VRAMBytes: gib, Busy: 3}},
			[2]want{{0, 0, 0}, {gib, 1, 1}}},
		{"unknown GPU indices are ignored",
			[]SimLoad{{GPUs: []int{7}, VRAMBytes: 10 * gib, Busy: 1}, {GPUs: []int{-1}, VRAMBytes: 10 * gib, Busy: 1}},
			[2]want{{0, 0, 0}, {0, 0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpus := simGPUs(t, tt.loads...)
			for i, w := range tt.want {
				g := gpus[i]
				if g.MemoryUsedBytes != w.used || g.Utilization != w.util || g.ComputeProcesses != w.procs {
					t.Errorf("gpu %d: used %v util %v procs %v, want %v", i, g.MemoryUsedBytes, g.Utilization, g.ComputeProcesses, w)
				}
				if g.MemoryTotalBytes != total || g.MemoryReservedBytes != reserved {
					t.Errorf("gpu %d: total %v reserved %v", i, g.MemoryTotalBytes, g.MemoryReservedBytes)
				}
				if g.MemoryFreeBytes != total-reserved-g.MemoryUsedBytes || g.MemoryFreeBytes < 0 {
					t.Errorf("gpu %d: free %v, want total - reserved - used = %v", i, g.MemoryFreeBytes, total-reserved-g.MemoryUsedBytes)
				}
				if g.MemoryUtilization < 0 || g.MemoryUtilization > 1 || g.TemperatureCelsius < 30 || g.PowerWatts > g.PowerLimitWatts {
					t.Errorf("gpu %d: implausible %+v", i, g)
				}
			}
		})
	}
}

func TestSimEngineVRAM(t *testing.T) {
	if got := SimEngineVRAM(4); got != 4<<30 {
		t.Fatalf("SimEngineVRAM(4) = %v, want 4 GiB", got)
	}
	if SimEngineVRAM(8) <= SimEngineVRAM(1) {
		t.Fatal("VRAM does not grow with slots")
	}
}
