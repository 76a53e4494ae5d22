package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/supervisor"
	"github.com/llorch/llorch/tracing"
	"github.com/llorch/llorch/version"
)

func newApp() *cli.App {
	hostname, _ := os.Hostname()
	return &cli.App{
		Name:    "pool-managerd",
		Usage:   "llorch node agent: watches engine handoff files, serves pool status and metrics, registers and heartbeats to orchestratord",
		Version: version.Version,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:9200", Usage: "listen address (host:port)", EnvVars: []string{"POOL_MANAGERD_ADDR"}},
			&cli.BoolFlag{Name: "cloud-profile", Usage: "register with and heartbeat to orchestratord (CLOUD profile)", EnvVars: []string{"POOL_MANAGERD_CLOUD_PROFILE"}},
			&cli.StringFlag{Name: "node-id", Value: hostname, Usage: "this node's id in the fleet", EnvVars: []string{"POOL_MANAGERD_NODE_ID"}},
			&cli.StringFlag{Name: "machine-id", Usage: "the physical machine's id (default: the node id)", EnvVars: []string{"POOL_MANAGERD_MACHINE_ID"}},
			&cli.StringFlag{Name: "address", Usage: "URL at which the control plane and Prometheus reach this agent, e.g. http://10.0.0.7:9200 (required with --cloud-profile)", EnvVars: []string{"POOL_MANAGERD_ADDRESS"}},
			&cli.StringFlag{Name: "orchestratord-url", Usage: "control plane URL, e.g. http://10.0.0.1:8080 (required with --cloud-profile)", EnvVars: []string{"ORCHESTRATORD_URL"}},
			&cli.StringFlag{Name: "api-token", Usage: "bearer token sent to the control plane and required on this agent's routes but /health and /metrics", EnvVars: []string{"LLORCH_API_TOKEN"}},
			&cli.StringFlag{Name: "pools", Value: "pool-0", Usage: "comma-separated pool ids this node serves", EnvVars: []string{"POOL_MANAGERD_POOLS"}},
			config.DurationFlag("heartbeat-interval", 10*time.Second, time.Second, "time between heartbeats (shortened if the control plane asks)", "POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS"),
			&cli.StringFlag{Name: "runtime-dir", Value: ".runtime/engines", Usage: "directory of engine handoff files", EnvVars: []string{"POOL_MANAGERD_RUNTIME_DIR"}},
			config.DurationFlag("watch-interval", time.Second, time.Millisecond, "poll interval of the runtime dir when fsnotify is unavailable or --watch-mode=poll", "POOL_MANAGERD_WATCH_INTERVAL_MS"),
			&cli.StringFlag{Name: "watch-mode", Value: string(handoff.ModeAuto), Usage: "auto (fsnotify, polling if it fails), fsnotify or poll", EnvVars: []string{"POOL_MANAGERD_WATCH_MODE"}},
			config.DurationFlag("shutdown-timeout", 30*time.Second, time.Second, "bound on each control-plane step of shutdown: final heartbeat, deregistration", "POOL_MANAGERD_SHUTDOWN_TIMEOUT_SECS"),
			config.DurationFlag("drain-timeout", 30*time.Second, time.Second, "on shutdown, how long to wait for in-flight requests before stopping engines", "POOL_MANAGERD_DRAIN_TIMEOUT_SECS"),
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
			config.DurationFlag("gpu-max-age", 0, time.Second, "GPU readings older than this count as missing (default: 3 poll intervals; 90s for dcgm, which samples every 30s)", "POOL_MANAGERD_GPU_MAX_AGE_SECS"),
			config.DurationFlag("engine-poll-interval", 2*time.Second, time.Millisecond, "how often each pool's engine /metrics and /slots are read", "POOL_MANAGERD_ENGINE_POLL_INTERVAL_MS"),
			&cli.StringFlag{Name: "sim-binary", Usage: "llorch binary that runs sim-engine (default: llorch next to this program, else on PATH)", EnvVars: []string{"POOL_MANAGERD_SIM_BINARY"}},
		}, config.LogFlags()...),
		Action:       run,
		OnUsageError: config.UsageError,
	}
}

// settings is the validated configuration; nothing starts before it exists.
type settings struct {
	addr, token, runtimeDir string
	pools                   []string
	watchMode               handoff.Mode
	watchInterval           time.Duration
	shutdownTimeout         time.Duration
	cloud                   bool
	controlPlaneURL         string
	heartbeatInterval       time.Duration
	drainTimeout            time.Duration
	registration            api.RegisterRequest
	engines                 []supervisor.Spec
	simBinary               string
	breaker                 supervisor.Breaker
	gpuSource               string
	simGPUs                 []exporter.SimGPUSpec
	dcgmURL                 string
	gpuPoll, gpuMaxAge      time.Duration
	enginePoll              time.Duration
}

func parseSettings(c *cli.Context) (settings, error) {
	s := settings{
		addr:              c.String("addr"),
		token:             c.String("api-token"),
		runtimeDir:        c.String("runtime-dir"),
		cloud:             c.Bool("cloud-profile"),
		controlPlaneURL:   strings.TrimSuffix(c.String("orchestratord-url"), "/"),
		heartbeatInterval: config.GetDuration(c, "heartbeat-interval"),
		watchInterval:     config.GetDuration(c, "watch-interval"),
		shutdownTimeout:   config.GetDuration(c, "shutdown-timeout"),
		drainTimeout:      config.GetDuration(c, "drain-timeout"),
		breaker: supervisor.Breaker{
			MaxCrashes: c.Int("engine-max-crashes"),
			Window:     config.GetDuration(c, "engine-crash-window"),
			Cooldown:   config.GetDuration(c, "engine-breaker-cooldown"),
		},
	}
	s.gpuSource, s.dcgmURL = c.String("gpu-source"), c.String("dcgm-exporter-url")
	s.gpuPoll, s.gpuMaxAge = config.GetDuration(c, "gpu-poll-interval"), config.GetDuration(c, "gpu-max-age")
	s.enginePoll = config.GetDuration(c, "engine-poll-interval")
	switch s.gpuSource {
	case "auto", "nvml", "none":
	case "dcgm":
		if s.dcgmURL == "" {
			return s, errors.New("--gpu-source dcgm needs --dcgm-exporter-url/POOL_MANAGERD_DCGM_EXPORTER_URL")
		}
	case "sim":
		if c.String("sim-gpus") == "" {
			return s, errors.New("--gpu-source sim needs --sim-gpus/POOL_MANAGERD_SIM_GPUS, e.g. 2xH200:141GiB")
		}
	default:
		return s, fmt.Errorf("--gpu-source/POOL_MANAGERD_GPU_SOURCE %q: want auto, nvml, dcgm, sim or none", s.gpuSource)
	}
	if v := c.String("sim-gpus"); v != "" {
		specs, err := exporter.ParseSimGPUs(v)
		if err != nil {
			return s, fmt.Errorf("--sim-gpus/POOL_MANAGERD_SIM_GPUS: %w", err)
		}
		s.simGPUs = specs
	}
	if s.dcgmURL != "" {
		if err := requireURL(s.dcgmURL, "--dcgm-exporter-url/POOL_MANAGERD_DCGM_EXPORTER_URL"); err != nil {
			return s, err
		}
	}
	if s.breaker.MaxCrashes < 1 {
		return s, fmt.Errorf("--engine-max-crashes/POOL_MANAGERD_ENGINE_MAX_CRASHES %d: want at least 1", s.breaker.MaxCrashes)
	}
	var err error
	if s.watchMode, err = handoff.ParseMode(c.String("watch-mode")); err != nil {
		return s, fmt.Errorf("--watch-mode/POOL_MANAGERD_WATCH_MODE: %w", err)
	}
	for _, p := range strings.Split(c.String("pools"), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !api.ValidID(p) {
			return s, fmt.Errorf("--pools/POOL_MANAGERD_POOLS: pool id %q: only letters, digits and -_.: are allowed", p)
		}
		s.pools = append(s.pools, p)
	}
	if s.engines, err = engineSpecs(c, s.pools); err != nil {
		return s, err
	}
	if len(s.engines) > 0 {
		s.pools = s.pools[:0]
		for _, e := range s.engines {
			s.pools = append(s.pools, e.PoolID)
		}
		if s.simBinary, err = simBinary(c.String("sim-binary"), s.engines); err != nil {
			return s, err
		}
	}
	nodeID := c.String("node-id")
	if !api.ValidID(nodeID) {
		return s, fmt.Errorf("--node-id/POOL_MANAGERD_NODE_ID %q: only letters, digits and -_.: are allowed", nodeID)
	}
	machineID := c.String("machine-id")
	if machineID == "" {
		machineID = nodeID
	}
	s.registration = api.RegisterRequest{
		NodeID:    nodeID,
		MachineID: machineID,
		Address:   c.String("address"),
		Version:   version.Version,
		Capabilities: api.Capabilities{
			GPUs:          []api.GPUInfo{},
			CPUCores:      runtime.NumCPU(),
			RAMTotalBytes: totalRAM(),
		},
	}
	if !s.cloud {
		return s, nil
	}
	if err := requireURL(s.registration.Address, "--address/POOL_MANAGERD_ADDRESS"); err != nil {
		return s, err
	}
	if err := requireURL(s.controlPlaneURL, "--orchestratord-url/ORCHESTRATORD_URL"); err != nil {
		return s, err
	}
	return s, nil
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

// simBinary finds the llorch binary for engine "sim": the flag, else next to
// this program, else on PATH. Engines given by path are checked to exist.
func simBinary(flag string, specs []supervisor.Spec) (string, error) {
	needSim := false
	for _, s := range specs {
		if s.Engine == supervisor.EngineSim {
			needSim = true
			continue
		}
		if _, err := exec.LookPath(s.Engine); err != nil {
			return "", fmt.Errorf("pool %s: engine %q: %w", s.PoolID, s.Engine, err)
		}
	}
	if !needSim {
		return "", nil
	}
	if flag != "" {
		if _, err := exec.LookPath(flag); err != nil {
			return "", fmt.Errorf("--sim-binary/POOL_MANAGERD_SIM_BINARY %q: %w", flag, err)
		}
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "llorch")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("llorch")
	if err != nil {
		return "", errors.New(`engine "sim" needs the llorch binary: none next to pool-managerd or on PATH (set --sim-binary/POOL_MANAGERD_SIM_BINARY)`)
	}
	return path, nil
}

// openGPUSource picks the GPU source --gpu-source names and returns its
// poller; nil for none. An explicitly named source that cannot open stops
// the program; auto falls through to the next.
func openGPUSource(s settings, nodeID string, pools *pool.Table, log *slog.Logger) (*exporter.Poller, error) {
	maxAge := s.gpuMaxAge
	poller := func(src exporter.GPUSource) *exporter.Poller {
		age := maxAge
		if age == 0 {
			age = 3 * s.gpuPoll
			if src.Name() == "dcgm" {
				age = max(age, 90*time.Second)
			}
		}
		log.Info("GPU source chosen", "source", src.Name(), "poll_interval", s.gpuPoll, "max_age", age)
		return exporter.NewPoller(src, s.gpuPoll, age)
	}
	dcgm := func() *exporter.Poller {
		return poller(exporter.NewDCGMSource(s.dcgmURL, &http.Client{Timeout: s.gpuPoll}))
	}
	switch s.gpuSource {
	case "none":
		log.Info("GPU source chosen", "source", "none")
		return nil, nil
	case "sim":
		return poller(exporter.NewSimSource(nodeID, s.simGPUs, simLoad(pools))), nil
	case "dcgm":
		return dcgm(), nil
	case "nvml":
		src, err := exporter.OpenNVML()
		if err != nil {
			return nil, fmt.Errorf("--gpu-source nvml: %w", err)
		}
		return poller(src), nil
	}
	src, err := exporter.OpenNVML()
	if err == nil {
		return poller(src), nil
	}
	log.Info("NVML unavailable", "err", err)
	if s.dcgmURL != "" {
		return dcgm(), nil
	}
	log.Warn("no GPU source: GPU metrics are off (llorch_gpu_source_up 0); set --gpu-source sim --sim-gpus to simulate GPUs")
	return nil, nil
}

// simLoad reports the pools' engines to the simulated GPUs.
func simLoad(pools *pool.Table) func() []exporter.SimLoad {
	return func() []exporter.SimLoad {
		var out []exporter.SimLoad
		for _, p := range pools.Snapshot() {
			if !p.Ready || p.SlotsTotal == 0 {
				continue
			}
			out = append(out, exporter.SimLoad{
				GPUs:      exporter.DeviceIndices(p.DeviceMask),
				VRAMBytes: exporter.SimEngineVRAM(p.SlotsTotal),
				Busy:      float64(p.SlotsTotal-p.SlotsFree) / float64(p.SlotsTotal),
			})
		}
		return out
	}
}

// vramAnnotated adds each pool's GPU memory to the table's snapshot for
// the pools collector.
type vramAnnotated struct {
	pools     *pool.Table
	inventory *exporter.Inventory
}

func (v vramAnnotated) Snapshot() []api.PoolState {
	ps := v.pools.Snapshot()
	for i := range ps {
		if total, free, ok := v.inventory.PoolVRAM(ps[i].DeviceMask); ok {
			ps[i].VRAMTotalBytes, ps[i].VRAMFreeBytes = total, free
		}
	}
	return ps
}

// step runs one shutdown step within timeout; its failure is logged by the
// step itself and does not stop the sequence.
func step(timeout time.Duration, fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = fn(ctx)
}

func requireURL(raw, name string) error {
	if raw == "" {
		return fmt.Errorf("%s is required with --cloud-profile", name)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want an http(s)://host:port URL", name, raw)
	}
	return nil
}

func run(c *cli.Context) error {
	log, err := config.NewLogger(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	s, err := parseSettings(c)
	if err != nil {
		return err
	}
	if err := api.CheckExposure(s.addr, s.token); err != nil {
		return err
	}
	nodeID := s.registration.NodeID
	log = log.With("node_id", nodeID)

	_, shutdownTracing, err := tracing.Setup(c.Context, "pool-managerd", version.Version, log)
	if err != nil {
		return fmt.Errorf("tracing (OTEL_* variables): %w", err)
	}
	defer func() {
		if err := shutdownTracing(context.Background()); err != nil {
			log.Warn("tracing shutdown", "err", err)
		}
	}()

	promReg := prometheus.NewRegistry()
	// Every series this agent exports carries node_id (SPEC §7).
	metricsReg := prometheus.WrapRegistererWith(prometheus.Labels{"node_id": nodeID}, promReg)
	metricsReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pools := pool.NewTable(s.pools)
	watcher, err := handoff.NewWatcher(handoff.WatcherOptions{
		Dir: s.runtimeDir, Mode: s.watchMode, PollInterval: s.watchInterval,
		Sink: pools, Logger: log, Registerer: metricsReg,
	})
	if err != nil {
		return err
	}
	ln, err := config.Listen(s.addr)
	if err != nil {
		return err
	}

	sigCtx, stopSignals := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	// The HTTP server and the watcher outlive the signal: they keep serving
	// through the shutdown sequence and stop last.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()

	watchErr := make(chan error, 1)
	go func() { watchErr <- watcher.Run(serveCtx) }()
	h := agent.NewHandler(agent.HandlerOptions{Pools: pools, Token: s.token, Version: version.Version, Gatherer: promReg, Logger: log})
	if tracing.Enabled() {
		h = tracing.Handler(h, "pool-managerd")
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- config.Serve(serveCtx, ln, h, 5*time.Second, log) }()

	attrs := []any{"addr", ln.Addr().String(), "version", version.Version, "cloud_profile", s.cloud, "pools", s.pools, "runtime_dir", s.runtimeDir}
	if s.token != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(s.token))
	}
	log.Info("pool-managerd listening", attrs...)

	poller, err := openGPUSource(s, nodeID, pools, log)
	if err != nil {
		return err
	}
	inventory := exporter.NewInventory(poller)
	scraper := exporter.NewEngineScraper(pools, pools, s.enginePoll)
	sourceName := "none"
	if poller != nil {
		sourceName = poller.Source().Name()
		go poller.Run(serveCtx)
	}
	go scraper.Run(serveCtx)
	metricsReg.MustRegister(exporter.New(map[string]exporter.Collector{
		"gpu":    exporter.NewGPUCollector(poller, sourceName),
		"pools":  exporter.NewPoolsCollector(vramAnnotated{pools, inventory}),
		"engine": exporter.NewEngineCollector(scraper),
	}, log))

	var sup *supervisor.Supervisor
	if len(s.engines) > 0 {
		sup, err = supervisor.New(supervisor.Options{
			RuntimeDir: s.runtimeDir, SimBinary: s.simBinary, Errors: pools, Breaker: s.breaker,
			Logger: log, Registerer: metricsReg,
		})
		if err != nil {
			return err
		}
		defer sup.Shutdown() // also on an early error return: no orphan engines
		for _, spec := range s.engines {
			if err := sup.Start(spec); err != nil {
				return err
			}
		}
	}

	var a *agent.Agent
	agentDone := make(chan struct{})
	if s.cloud {
		a, err = agent.New(agent.Options{
			Registration: s.registration,
			ControlPlane: &api.Client{BaseURL: s.controlPlaneURL, Token: s.token,
				HTTP: &http.Client{Timeout: 10 * time.Second, Transport: tracing.Transport(nil)}},
			Pools:             pools,
			GPUs:              inventory,
			HeartbeatInterval: s.heartbeatInterval,
			Logger:            log,
			Registerer:        metricsReg,
		})
		if err != nil {
			return err
		}
		go func() {
			defer close(agentDone)
			// Register with the GPU inventory when the source answers fast;
			// never hold registration hostage to a slow driver.
			if poller != nil {
				wctx, cancel := context.WithTimeout(sigCtx, 2*time.Second)
				poller.WaitFirst(wctx)
				cancel()
			}
			a.Run(sigCtx)
		}()
	}

	select {
	case <-sigCtx.Done():
	case err := <-serveErr:
		return err
	case err := <-watchErr:
		if err != nil {
			return fmt.Errorf("handoff watcher: %w", err)
		}
	}
	// SPEC §4: stop taking work, say so in a final heartbeat, wait for
	// in-flight work, deregister, stop the engines.
	log.Info("shutting down: draining pools")
	pools.DrainAll()
	if a != nil {
		<-agentDone
		step(s.shutdownTimeout, a.Drain)
	}
	if sup != nil {
		dctx, cancel := context.WithTimeout(context.Background(), s.drainTimeout)
		sup.Drain(dctx)
		cancel()
	}
	if a != nil {
		step(s.shutdownTimeout, a.Deregister)
	}
	if sup != nil {
		sup.Shutdown()
	}
	stopServing()
	if err := <-serveErr; err != nil {
		return err
	}
	log.Info("pool-managerd stopped")
	return nil
}
