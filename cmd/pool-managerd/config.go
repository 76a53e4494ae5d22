package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/supervisor"
)

// configFrom parses the flags into the daemon's configuration; what the
// flags alone cannot tell (a node id's syntax, a URL required in the cloud
// profile, a GPU source's needs) agent.NewDaemon validates.
func configFrom(c *cli.Context) (agent.Config, error) {
	cfg := agent.Config{
		Addr:              c.String("addr"),
		Token:             c.String("api-token"),
		RuntimeDir:        c.String("runtime-dir"),
		WatchInterval:     config.GetDuration(c, "watch-interval"),
		RescanInterval:    config.GetDuration(c, "rescan-interval"),
		SimBinary:         c.String("sim-binary"),
		Cloud:             c.Bool("cloud-profile"),
		ControlPlaneURL:   c.String("orchestratord-url"),
		HeartbeatInterval: config.GetDuration(c, "heartbeat-interval"),
		ShutdownTimeout:   config.GetDuration(c, "shutdown-timeout"),
		DrainTimeout:      config.GetDuration(c, "drain-timeout"),
		Breaker: supervisor.Breaker{
			MaxCrashes: c.Int("engine-max-crashes"),
			Window:     config.GetDuration(c, "engine-crash-window"),
			Cooldown:   config.GetDuration(c, "engine-breaker-cooldown"),
		},
		GPU: agent.GPUConfig{
			Source:       c.String("gpu-source"),
			DCGMURL:      c.String("dcgm-exporter-url"),
			PollInterval: config.GetDuration(c, "gpu-poll-interval"),
			MaxAge:       config.GetDuration(c, "gpu-max-age"),
		},
		EnginePollInterval: config.GetDuration(c, "engine-poll-interval"),
		EngineHost:         c.String("engine-host"),
		Registration: api.RegisterRequest{
			NodeID:    c.String("node-id"),
			MachineID: c.String("machine-id"),
			Address:   c.String("address"),
			Capabilities: api.Capabilities{
				CPUCores:      runtime.NumCPU(),
				RAMTotalBytes: totalRAM(),
			},
		},
	}
	var err error
	if v := c.String("sim-gpus"); v != "" {
		if cfg.GPU.SimGPUs, err = exporter.ParseSimGPUs(v); err != nil {
			return cfg, fmt.Errorf("--sim-gpus/POOL_MANAGERD_SIM_GPUS: %w", err)
		}
	}
	if cfg.WatchMode, err = handoff.ParseMode(c.String("watch-mode")); err != nil {
		return cfg, fmt.Errorf("--watch-mode/POOL_MANAGERD_WATCH_MODE: %w", err)
	}
	for _, p := range strings.Split(c.String("pools"), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !api.ValidID(p) {
			return cfg, fmt.Errorf("--pools/POOL_MANAGERD_POOLS: pool id %q: only letters, digits and -_.: are allowed", p)
		}
		cfg.Pools = append(cfg.Pools, p)
	}
	cfg.Engines, err = engineSpecs(c, cfg.Pools)
	return cfg, err
}

// engineSpecs returns the engines to launch: from --pools-config, or one
// per --pools entry when --engine is set, or none.
func engineSpecs(c *cli.Context, pools []string) ([]supervisor.Spec, error) {
	if path := c.String("pools-config"); path != "" {
		if c.IsSet("engine") || c.IsSet("pools") {
			return nil, errors.New("--pools-config/POOL_MANAGERD_POOLS_CONFIG declares pools and engines: drop --pools and --engine")
		}
		specs, err := supervisor.LoadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--pools-config/POOL_MANAGERD_POOLS_CONFIG: %w", err)
		}
		return specs, nil
	}
	eng := c.String("engine")
	if eng == "" {
		return nil, nil
	}
	specs := make([]supervisor.Spec, 0, len(pools))
	for _, id := range pools {
		spec := supervisor.Spec{
			PoolID: id, Engine: eng, Model: c.String("model"),
			Slots: c.Int("engine-slots"), CtxSize: c.Int("engine-ctx-size"),
			Args: strings.Fields(c.String("engine-args")),
		}
		if err := spec.Normalize(); err != nil {
			return nil, fmt.Errorf("--engine/POOL_MANAGERD_ENGINE for pool %s: %w", id, err)
		}
		spec.SetHealthTimeout(config.GetDuration(c, "engine-health-timeout"))
		specs = append(specs, spec)
	}
	return specs, nil
}
