//go:build cgo

package exporter

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVMLSource reads GPUs through NVML (github.com/NVIDIA/go-nvml). Memory
// comes from the v2 memory info, where "used" excludes driver-reserved
// memory (an idle H200: v1 says 615 MiB used, v2 0 used + 615 MiB
// reserved).
type NVMLSource struct {
	lib nvml.Interface

	mu     sync.Mutex
	static map[int]gpuIdentity // identity read once per device
}

type gpuIdentity struct{ uuid, name, cc string }

var _ GPUSource = (*NVMLSource)(nil)

// OpenNVML initialises NVML from the system's libnvidia-ml. It fails
// cleanly on a machine without the driver.
func OpenNVML() (*NVMLSource, error) { return NewNVMLSource(nvml.New()) }

// NewNVMLSource initialises lib. Nothing else is called on lib if Init
// fails: go-nvml kills the process on a call after a failed Init.
func NewNVMLSource(lib nvml.Interface) (*NVMLSource, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml init: %s", nvmlError(lib, ret))
	}
	return &NVMLSource{lib: lib, static: map[int]gpuIdentity{}}, nil
}

// Close shuts NVML down.
func (s *NVMLSource) Close() error {
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %s", nvmlError(s.lib, ret))
	}
	return nil
}

// Name implements GPUSource.
func (s *NVMLSource) Name() string { return "nvml" }

func nvmlError(lib nvml.Interface, ret nvml.Return) string {
	return lib.ErrorString(ret)
}

// Read implements GPUSource. A reading the device does not support is left
// NaN; only failing to enumerate devices is an error.
func (s *NVMLSource) Read(ctx context.Context) ([]GPU, error) {
	count, ret := s.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", nvmlError(s.lib, ret))
	}
	gpus := make([]GPU, 0, count)
	for i := range count {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dev, ret := s.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d: %s", i, nvmlError(s.lib, ret))
		}
		gpus = append(gpus, s.readDevice(i, dev))
	}
	return gpus, nil
}

func (s *NVMLSource) identity(i int, dev nvml.Device) gpuIdentity {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.static[i]; ok {
		return id
	}
	var id gpuIdentity
	if v, ret := dev.GetUUID(); ret == nvml.SUCCESS {
		id.uuid = v
	}
	if v, ret := dev.GetName(); ret == nvml.SUCCESS {
		id.name = v
	}
	if major, minor, ret := dev.GetCudaComputeCapability(); ret == nvml.SUCCESS {
		id.cc = fmt.Sprintf("%d.%d", major, minor)
	}
	s.static[i] = id
	return id
}

func (s *NVMLSource) readDevice(i int, dev nvml.Device) GPU {
	g := NewGPU(i)
	id := s.identity(i, dev)
	g.UUID, g.Name, g.ComputeCapability = id.uuid, id.name, id.cc
	if m, ret := dev.GetMemoryInfo_v2(); ret == nvml.SUCCESS {
		g.MemoryTotalBytes, g.MemoryUsedBytes = float64(m.Total), float64(m.Used)
		g.MemoryReservedBytes, g.MemoryFreeBytes = float64(m.Reserved), float64(m.Free)
	} else if m, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
		// Old drivers: v1 counts reserved memory as used; reserved unknown.
		g.MemoryTotalBytes, g.MemoryUsedBytes, g.MemoryFreeBytes = float64(m.Total), float64(m.Used), float64(m.Free)
	}
	if u, ret := dev.GetUtilizationRates(); ret == nvml.SUCCESS {
		g.Utilization, g.MemoryUtilization = float64(u.Gpu)/100, float64(u.Memory)/100
	}
	if v, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
		g.TemperatureCelsius = float64(v)
	}
	if v, ret := dev.GetPowerUsage(); ret == nvml.SUCCESS {
		g.PowerWatts = float64(v) / 1000
	}
	if v, ret := dev.GetEnforcedPowerLimit(); ret == nvml.SUCCESS {
		g.PowerLimitWatts = float64(v) / 1000
	}
	if v, ret := dev.GetClockInfo(nvml.CLOCK_SM); ret == nvml.SUCCESS {
		g.SMClockHertz = float64(v) * 1e6
	}
	if v, ret := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
		g.ECCUncorrected = float64(v)
	}
	if procs, ret := dev.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
		g.ComputeProcesses = float64(len(procs))
		for _, p := range procs {
			// NVML reports an unavailable per-process figure (e.g. under
			// some virtualisation) as the max value.
			if p.UsedGpuMemory == math.MaxUint64 {
				continue
			}
			g.Processes = append(g.Processes, GPUProcess{PID: p.Pid, MemoryUsedBytes: float64(p.UsedGpuMemory)})
		}
	}
	return g
}
