package main

import (
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/supervisor"
)

// flags are pool-managerd's settings: names, variables and defaults are
// the SPEC §2 contract, documented in docs/configuration.md.
func flags() []cli.Flag {
	hostname, _ := os.Hostname()
	gpuMaxAge := config.DurationFlag("gpu-max-age", 0, time.Second, "GPU readings older than this count as missing", "POOL_MANAGERD_GPU_MAX_AGE_SECS")
	gpuMaxAge.DefaultText = "3 poll intervals; 90s for dcgm, which samples every 30s"
	return append([]cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:9200", Usage: "listen address (host:port)", EnvVars: []string{"POOL_MANAGERD_ADDR"}},
		&cli.BoolFlag{Name: "cloud-profile", Usage: "register with and heartbeat to orchestratord (CLOUD profile)", EnvVars: []string{"POOL_MANAGERD_CLOUD_PROFILE"}},
		&cli.StringFlag{Name: "node-id", Value: hostname, Usage: "this node's id in the fleet", EnvVars: []string{"POOL_MANAGERD_NODE_ID"}},
		&cli.StringFlag{Name: "machine-id", Usage: "the physical machine's id (default: the node id)", EnvVars: []string{"POOL_MANAGERD_MACHINE_ID"}},
		&cli.StringFlag{Name: "address", Usage: "URL at which the control plane and Prometheus reach this agent, e.g. http://10.0.0.7:9200 (required with --cloud-profile)", EnvVars: []string{"POOL_MANAGERD_ADDRESS"}},
		&cli.StringFlag{Name: "orchestratord-url", Usage: "control plane URL, e.g. http://10.0.0.1:8080 (required with --cloud-profile); several, comma-separated, when control planes share one fleet (--registry etcd): a call that cannot connect moves to the next", EnvVars: []string{"ORCHESTRATORD_URL"}},
		&cli.StringFlag{Name: "api-token", Usage: "bearer token sent to the control plane and required on this agent's routes but /health and /metrics", EnvVars: []string{"LLORCH_API_TOKEN"}},
		&cli.StringFlag{Name: "pools", Value: "pool-0", Usage: "comma-separated pool ids this node serves", EnvVars: []string{"POOL_MANAGERD_POOLS"}},
		config.DurationFlag("heartbeat-interval", 10*time.Second, time.Second, "time between heartbeats (shortened if the control plane asks)", "POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS"),
		&cli.StringFlag{Name: "runtime-dir", Value: ".runtime/engines", Usage: "directory of engine handoff files", EnvVars: []string{"POOL_MANAGERD_RUNTIME_DIR"}},
		config.DurationFlag("watch-interval", time.Second, time.Millisecond, "poll interval of the runtime dir when fsnotify is unavailable or --watch-mode=poll", "POOL_MANAGERD_WATCH_INTERVAL_MS"),
		&cli.StringFlag{Name: "watch-mode", Value: string(handoff.ModeAuto), Usage: "auto (fsnotify, polling if it fails), fsnotify or poll", EnvVars: []string{"POOL_MANAGERD_WATCH_MODE"}},
		config.DurationFlag("rescan-interval", handoff.DefaultRescanInterval, time.Second, "with fsnotify, re-read the whole runtime dir this often anyway (catches a replaced dir or a dropped event)", "POOL_MANAGERD_RESCAN_INTERVAL"),
		config.DurationFlag("shutdown-timeout", 30*time.Second, time.Second, "bound on each control-plane step of shutdown: final heartbeat, deregistration", "POOL_MANAGERD_SHUTDOWN_TIMEOUT_SECS"),
		config.DurationFlag("drain-timeout", 30*time.Second, time.Second, "on shutdown, how long to wait for in-flight requests before stopping engines; also the deadline of a pool drain that names none", "POOL_MANAGERD_DRAIN_TIMEOUT_SECS"),
		&cli.StringFlag{Name: "pools-config", Usage: "YAML file declaring each pool's engine (id, engine, model, slots, ctx_size, device_mask, args, health_timeout); replaces --pools and the --engine flags", EnvVars: []string{"POOL_MANAGERD_POOLS_CONFIG"}},
		&cli.StringFlag{Name: "engine", Usage: "launch an engine for each of --pools: \"sim\" (llorch sim-engine) or the path of llama-server; empty: engines are started by someone else and announced by handoff files", EnvVars: []string{"POOL_MANAGERD_ENGINE"}},
		&cli.StringFlag{Name: "model", Usage: "model (GGUF path) for --engine", EnvVars: []string{"POOL_MANAGERD_MODEL"}},
		&cli.IntFlag{Name: "engine-slots", Value: supervisor.DefaultSlots, Usage: "slots (-np) of each engine", EnvVars: []string{"POOL_MANAGERD_ENGINE_SLOTS"}},
		&cli.IntFlag{Name: "engine-ctx-size", Value: supervisor.DefaultCtxSize, Usage: "total context (-c) of each engine", EnvVars: []string{"POOL_MANAGERD_ENGINE_CTX_SIZE"}},
		&cli.StringFlag{Name: "engine-args", Usage: "extra engine flags, space-separated (e.g. \"-ngl 99\", or \"--tokens-per-second 80\" for sim)", EnvVars: []string{"POOL_MANAGERD_ENGINE_ARGS"}},
		config.DurationFlag("engine-health-timeout", supervisor.DefaultHealthTimeout, time.Second, "how long an engine may take to answer /health 200 after start", "POOL_MANAGERD_ENGINE_HEALTH_TIMEOUT_SECS"),
		&cli.IntFlag{Name: "engine-max-crashes", Value: 5, Usage: "crashes within --engine-crash-window that open an engine's circuit breaker (no more restarts until the cooldown)", EnvVars: []string{"POOL_MANAGERD_ENGINE_MAX_CRASHES"}},
		config.DurationFlag("engine-crash-window", 5*time.Minute, time.Second, "window in which --engine-max-crashes counts", "POOL_MANAGERD_ENGINE_CRASH_WINDOW_SECS"),
		config.DurationFlag("engine-breaker-cooldown", 5*time.Minute, time.Second, "how long an open breaker waits before one more start", "POOL_MANAGERD_ENGINE_BREAKER_COOLDOWN_SECS"),
		&cli.StringFlag{Name: "gpu-source", Value: "auto", Usage: "where GPU facts come from: auto (NVML, then DCGM if --dcgm-exporter-url, else none), nvml, dcgm, sim, none", EnvVars: []string{"POOL_MANAGERD_GPU_SOURCE"}},
		&cli.StringFlag{Name: "sim-gpus", Usage: "with --gpu-source sim: the simulated GPUs, [Nx]MODEL:SIZE comma-separated, e.g. 2xH200:141GiB", EnvVars: []string{"POOL_MANAGERD_SIM_GPUS"}},
		&cli.StringFlag{Name: "dcgm-exporter-url", Usage: "a running dcgm-exporter's metrics URL, e.g. http://127.0.0.1:9400/metrics", EnvVars: []string{"POOL_MANAGERD_DCGM_EXPORTER_URL"}},
		config.DurationFlag("gpu-poll-interval", 2*time.Second, time.Millisecond, "how often the GPU source is read (off the scrape path)", "POOL_MANAGERD_GPU_POLL_INTERVAL_MS"),
		gpuMaxAge,
		&cli.StringFlag{Name: "engine-host", Value: "127.0.0.1", Usage: "the address the engines this agent launches listen on and are announced at: 127.0.0.1 serves a control plane on this machine only; with the control plane elsewhere, this machine's address that it reaches (llama-server has no auth of its own: keep it on a private network, or pass --api-key in --engine-args)", EnvVars: []string{"POOL_MANAGERD_ENGINE_HOST"}},
		config.DurationFlag("engine-poll-interval", 2*time.Second, time.Millisecond, "how often each pool's engine /metrics and /slots are read", "POOL_MANAGERD_ENGINE_POLL_INTERVAL_MS"),
		&cli.StringFlag{Name: "sim-binary", Usage: "llorch binary that runs sim-engine (default: llorch next to this program, else on PATH)", EnvVars: []string{"POOL_MANAGERD_SIM_BINARY"}},
	}, config.LogFlags()...)
}
