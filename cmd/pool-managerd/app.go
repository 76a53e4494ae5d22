package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
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
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
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
			config.DurationFlag("shutdown-timeout", 30*time.Second, time.Second, "bound on the shutdown sequence: final heartbeat and deregistration", "POOL_MANAGERD_SHUTDOWN_TIMEOUT_SECS"),
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
	registration            api.RegisterRequest
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

	promReg := prometheus.NewRegistry()
	// Every series this agent exports carries node_id (SPEC §7).
	metricsReg := prometheus.WrapRegistererWith(prometheus.Labels{"node_id": nodeID}, promReg)
	metricsReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pools := pool.NewTable(s.pools)
	metricsReg.MustRegister(pools)
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
	serveErr := make(chan error, 1)
	go func() { serveErr <- config.Serve(serveCtx, ln, h, 5*time.Second, log) }()

	attrs := []any{"addr", ln.Addr().String(), "version", version.Version, "cloud_profile", s.cloud, "pools", s.pools, "runtime_dir", s.runtimeDir}
	if s.token != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(s.token))
	}
	log.Info("pool-managerd listening", attrs...)

	var a *agent.Agent
	agentDone := make(chan struct{})
	if s.cloud {
		a, err = agent.New(agent.Options{
			Registration:      s.registration,
			ControlPlane:      &api.Client{BaseURL: s.controlPlaneURL, Token: s.token, HTTP: &http.Client{Timeout: 10 * time.Second}},
			Pools:             pools,
			HeartbeatInterval: s.heartbeatInterval,
			Logger:            log,
			Registerer:        metricsReg,
		})
		if err != nil {
			return err
		}
		go func() { defer close(agentDone); a.Run(sigCtx) }()
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
	log.Info("shutting down: draining pools")
	if a == nil {
		pools.DrainAll()
	} else {
		<-agentDone
		sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
		err := a.Shutdown(sctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("shutdown incomplete", "err", err)
		}
	}
	stopServing()
	if err := <-serveErr; err != nil {
		return err
	}
	log.Info("pool-managerd stopped")
	return nil
}
