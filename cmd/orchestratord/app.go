package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/version"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "orchestratord",
		Usage:   "llorch control plane: node registry and Prometheus service discovery for a fleet of GPU node agents",
		Version: version.Version,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address (host:port)", EnvVars: []string{"ORCHESTRATORD_ADDR", "ORCHD_ADDR"}},
			&cli.BoolFlag{Name: "cloud-profile", Usage: "keep a registry of node agents that register and heartbeat (CLOUD profile)", EnvVars: []string{"ORCHESTRATORD_CLOUD_PROFILE"}},
			config.DurationFlag("node-timeout", 30*time.Second, time.Millisecond, "a node with no heartbeat for this long is offline", "ORCHESTRATORD_NODE_TIMEOUT_MS"),
			config.DurationFlag("stale-check-interval", 10*time.Second, time.Second, "how often to look for nodes past --node-timeout", "ORCHESTRATORD_STALE_CHECK_INTERVAL_SECS"),
			&cli.StringFlag{Name: "api-token", Usage: "bearer token required on every route but /health and /metrics; required on a non-loopback --addr", EnvVars: []string{"LLORCH_API_TOKEN"}},
		}, config.LogFlags()...),
		Action:       run,
		OnUsageError: config.UsageError,
	}
}

func run(c *cli.Context) error {
	log, err := config.NewLogger(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	addr, token := c.String("addr"), c.String("api-token")
	if err := api.CheckExposure(addr, token); err != nil {
		return err
	}
	ln, err := config.Listen(addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var reg *registry.Registry
	if c.Bool("cloud-profile") {
		timeout := config.GetDuration(c, "node-timeout")
		interval := config.GetDuration(c, "stale-check-interval")
		reg = registry.New(registry.Options{Timeout: timeout, Logger: log})
		promReg.MustRegister(reg)
		go reg.RunStaleChecker(ctx, interval)
		log.Info("cloud profile: node registry on", "node_timeout", timeout, "stale_check_interval", interval)
	}
	attrs := []any{"addr", ln.Addr().String(), "version", version.Version, "cloud_profile", reg != nil}
	if token != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(token))
	}
	log.Info("orchestratord listening", attrs...)

	h := controlplane.NewHandler(controlplane.Options{Registry: reg, Token: token, Version: version.Version, Gatherer: promReg, Logger: log})
	if err := config.Serve(ctx, ln, h, 10*time.Second, log); err != nil {
		return err
	}
	log.Info("orchestratord stopped")
	return nil
}
