package exporter

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// SimGPUSpec is one kind of simulated GPU: Count GPUs named Model with
// MemoryBytes each.
type SimGPUSpec struct {
	Count       int
	Model       string
	MemoryBytes float64
}

var simSpecRE = regexp.MustCompile(`^(?:(\d+)x)?([A-Za-z0-9_.-]+):(\d+(?:\.\d+)?)(GiB|GB|MiB|MB)$`)

// maxSimGPUs bounds the GPUs --sim-gpus may describe: each is built, read
// and exported, so a typo must not make millions.
const maxSimGPUs = 1024

// ParseSimGPUs parses --sim-gpus: comma-separated "[Nx]MODEL:SIZE", e.g.
// "2xH200:141GiB" or "1xH100:80GiB,4xL4:24GiB".
func ParseSimGPUs(s string) ([]SimGPUSpec, error) {
	var out []SimGPUSpec
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		m := simSpecRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("sim GPUs %q: want [Nx]MODEL:SIZE such as 2xH200:141GiB", part)
		}
		n := 1
		var nerr error
		if m[1] != "" {
			n, nerr = strconv.Atoi(m[1])
		}
		size, serr := strconv.ParseFloat(m[3], 64)
		unit := map[string]float64{"GiB": 1 << 30, "GB": 1e9, "MiB": 1 << 20, "MB": 1e6}[m[4]]
		if nerr != nil || serr != nil || n < 1 || size <= 0 || math.IsInf(size*unit, 0) {
			return nil, fmt.Errorf("sim GPUs %q: count and size must be positive numbers", part)
		}
		if total += n; total > maxSimGPUs {
			return nil, fmt.Errorf("sim GPUs %q: at most %d GPUs can be simulated", s, maxSimGPUs)
		}
		out = append(out, SimGPUSpec{Count: n, Model: m[2], MemoryBytes: size * unit})
	}
	return out, nil
}

// SimLoad is one engine as the simulated GPUs see it.
type SimLoad struct {
	// GPUs the engine runs on (its device mask); empty means all.
	GPUs      []int
	VRAMBytes float64
	// Busy is the fraction of its slots processing (0-1).
	Busy float64
}

// SimSource reports the GPUs --sim-gpus describes, with memory used and
// utilisation following the engines the agent runs, so VRAM-aware
// placement, dashboards and alerts work without a GPU.
type SimSource struct {
	gpus []GPU
	load func() []SimLoad
}

var _ GPUSource = (*SimSource)(nil)

// simReservedRatio is driver-reserved memory as a share of the total, as
// measured on an idle H200 (615 MiB of 143,771 MiB).
const simReservedRatio = 615.0 / 143771

// NewSimSource builds the simulated GPUs of specs for node (which makes
// their UUIDs unique and stable); load reports the engines.
func NewSimSource(node string, specs []SimGPUSpec, load func() []SimLoad) *SimSource {
	s := &SimSource{load: load}
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	nodeHash := h.Sum32()
	for _, spec := range specs {
		for range spec.Count {
			i := len(s.gpus)
			g := NewGPU(i)
			g.UUID = fmt.Sprintf("GPU-51m00000-%04x-%04x-0000-%012d", nodeHash>>16, nodeHash&0xffff, i)
			g.Name = "NVIDIA " + spec.Model + " (simulated)"
			g.ComputeCapability = "9.0"
			g.MemoryTotalBytes = spec.MemoryBytes
			g.MemoryReservedBytes = float64(int64(spec.MemoryBytes * simReservedRatio))
			g.PowerLimitWatts = 700
			g.SMClockHertz = 1980e6
			g.ECCUncorrected = 0
			g.LastXID = 0 // a healthy GPU: no XID error yet (DCGM's reading)
			s.gpus = append(s.gpus, g)
		}
	}
	return s
}

// Name implements GPUSource.
func (s *SimSource) Name() string { return "sim" }

// Read implements GPUSource.
func (s *SimSource) Read(context.Context) ([]GPU, error) {
	used := make([]float64, len(s.gpus))
	busy := make([]float64, len(s.gpus))
	engines := make([]float64, len(s.gpus))
	if s.load != nil {
		for _, l := range s.load() {
			gpus := l.GPUs
			if len(gpus) == 0 {
				gpus = make([]int, len(s.gpus))
				for i := range gpus {
					gpus[i] = i
				}
			}
			for _, i := range gpus {
				if i < 0 || i >= len(s.gpus) {
					continue
				}
				used[i] += l.VRAMBytes / float64(len(gpus))
				busy[i] += l.Busy
				engines[i]++
			}
		}
	}
	out := make([]GPU, len(s.gpus))
	for i, g := range s.gpus {
		avail := g.MemoryTotalBytes - g.MemoryReservedBytes
		g.MemoryUsedBytes = min(used[i], avail)
		g.MemoryFreeBytes = avail - g.MemoryUsedBytes
		util := 0.0
		if engines[i] > 0 {
			util = min(1, busy[i]/engines[i])
		}
		g.Utilization, g.MemoryUtilization = util, util*0.25
		g.TemperatureCelsius = 35 + 30*util
		g.PowerWatts = 120 + 570*util
		g.ComputeProcesses = engines[i]
		out[i] = g
	}
	return out, nil
}

// SimEngineVRAM estimates a simulated engine's memory: weights plus KV
// cache growing with its slots.
func SimEngineVRAM(slots int) float64 { return 2<<30 + float64(slots)*(512<<20) }
