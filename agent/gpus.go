package agent

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/pool"
)

// openGPUs opens the GPU source cfg names and returns its poller; nil for
// none. A source named explicitly that cannot open is an error (so the agent
// stops before it serves); auto falls through to the next source.
func openGPUs(cfg GPUConfig, nodeID string, pools *pool.Table, log *slog.Logger) (*exporter.Poller, error) {
	poller := func(src exporter.GPUSource) *exporter.Poller {
		age := gpuMaxAge(cfg, src.Name())
		log.Info("GPU source chosen", "source", src.Name(), "poll_interval", cfg.PollInterval, "max_age", age)
		return exporter.NewPoller(src, cfg.PollInterval, age)
	}
	dcgm := func() *exporter.Poller {
		return poller(exporter.NewDCGMSource(cfg.DCGMURL, &http.Client{Timeout: cfg.PollInterval}))
	}
	switch cfg.Source {
	case GPUNone:
		log.Info("GPU source chosen", "source", GPUNone)
		return nil, nil
	case GPUSim:
		return poller(exporter.NewSimSource(nodeID, cfg.SimGPUs, simLoad(pools))), nil
	case GPUDCGM:
		return dcgm(), nil
	case GPUNVML:
		src, err := exporter.OpenNVML()
		if err != nil {
			return nil, fmt.Errorf("--gpu-source/POOL_MANAGERD_GPU_SOURCE nvml: cannot read the GPUs through NVML (%w): "+
				"is the NVIDIA driver installed? --gpu-source auto runs without it, dcgm reads a dcgm-exporter instead", err)
		}
		return poller(src), nil
	}
	src, err := exporter.OpenNVML()
	if err == nil {
		return poller(src), nil
	}
	log.Info("NVML unavailable", "err", err)
	if cfg.DCGMURL != "" {
		return dcgm(), nil
	}
	log.Warn("no GPU source: GPU metrics are off (llorch_gpu_source_up 0); set --gpu-source sim --sim-gpus to simulate GPUs")
	return nil, nil
}

// gpuMaxAge is the staleness bound of a source's readings: the configured
// one, else 3 poll intervals, and at least 90s for dcgm (dcgm-exporter
// samples every 30s).
func gpuMaxAge(cfg GPUConfig, source string) time.Duration {
	if cfg.MaxAge > 0 {
		return cfg.MaxAge
	}
	age := 3 * cfg.PollInterval
	if source == GPUDCGM {
		age = max(age, 90*time.Second)
	}
	return age
}

// simLoad is the simulated GPUs' load model: each ready pool's engine holds
// exporter.SimEngineVRAM of its slots on its device mask's GPUs (all for an
// empty mask) and keeps them as busy as its share of busy slots.
func simLoad(pools *pool.Table) func() []exporter.SimLoad {
	return func() []exporter.SimLoad {
		var out []exporter.SimLoad
		for _, p := range pools.Snapshot() {
			if !p.Ready || p.SlotsTotal == 0 {
				continue
			}
			out = append(out, exporter.SimLoad{
				GPUs:      api.DeviceIndices(p.DeviceMask),
				VRAMBytes: exporter.SimEngineVRAM(p.SlotsTotal),
				Busy:      float64(p.SlotsTotal-p.SlotsFree) / float64(p.SlotsTotal),
			})
		}
		return out
	}
}
