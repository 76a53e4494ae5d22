package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/tracing"
	"github.com/llorch/llorch/utilization"
	"github.com/llorch/llorch/version"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "orchestratord",
		Usage:   "llorch control plane: node registry, task admission, placement and streaming for llama.cpp engines",
		Version: version.Version,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address (host:port)", EnvVars: []string{"ORCHESTRATORD_ADDR", "ORCHD_ADDR"}},
			&cli.BoolFlag{Name: "cloud-profile", Usage: "keep a registry of node agents that register and heartbeat (CLOUD profile)", EnvVars: []string{"ORCHESTRATORD_CLOUD_PROFILE"}},
			config.DurationFlag("node-timeout", 30*time.Second, time.Millisecond, "a node with no heartbeat for this long is offline", "ORCHESTRATORD_NODE_TIMEOUT_MS"),
			config.DurationFlag("stale-check-interval", 10*time.Second, time.Second, "how often to look for nodes past --node-timeout", "ORCHESTRATORD_STALE_CHECK_INTERVAL_SECS"),
			&cli.StringFlag{Name: "api-token", Usage: "bearer token required on every route but /health and /metrics; required on a non-loopback --addr", EnvVars: []string{"LLORCH_API_TOKEN"}},
			&cli.IntFlag{Name: "admission-capacity", Value: 100, Usage: "tasks that may wait for a pool; beyond it the admission policy applies", EnvVars: []string{"ORCHD_ADMISSION_CAPACITY"}},
			&cli.StringFlag{Name: "admission-policy", Value: string(admission.Reject), Usage: "when the queue is full: reject (429 ADMISSION_REJECT) or drop-lru (evict the oldest batch task)", EnvVars: []string{"ORCHD_ADMISSION_POLICY"}},
			&cli.StringFlag{Name: "prometheus-url", Usage: "read utilisation for placement from this Prometheus (PromQL) instead of scraping the node agents directly", EnvVars: []string{"ORCHESTRATORD_PROMETHEUS_URL"}},
			&cli.StringFlag{Name: "runtime-dir", Value: ".runtime/engines", Usage: "HOME profile: the local engines' handoff directory", EnvVars: []string{"ORCHD_RUNTIME_DIR"}},
			&cli.StringFlag{Name: "score-weights", Usage: "placement score weights, name=weight comma-separated over the defaults (" + defaultWeights() + "); 0 disables one", EnvVars: []string{"ORCHD_SCORE_WEIGHTS"}},
			config.DurationFlag("metrics-interval", 2*time.Second, time.Millisecond, "how often utilisation is read (agents' /metrics or PromQL)", "ORCHD_METRICS_INTERVAL_MS"),
			config.DurationFlag("metrics-stale-after", 10*time.Second, time.Millisecond, "utilisation older than this is ignored; placement falls back to registry state", "ORCHD_METRICS_STALE_AFTER_MS"),
			&cli.Float64Flag{Name: "ttft-weight", Value: scheduler.DefaultTTFTWeight, Usage: "how much more placement values the first token than the rest of the answer: a task waits for a faster pool only if its answer would end (1 + this) times the wait sooner there", EnvVars: []string{"ORCHD_TTFT_WEIGHT"}},
			&cli.IntFlag{Name: "engine-backlog", Value: 0, Usage: "tasks an engine may hold waiting beyond its slots; 0 holds every waiting task in this control plane's queue (priorities hold, and the pool is chosen when a slot frees)", EnvVars: []string{"ORCHD_ENGINE_BACKLOG"}},
			config.DurationFlag("quarantine", 30*time.Second, time.Millisecond, "how long a pool that failed a dispatch gets no new tasks", "ORCHD_QUARANTINE_MS"),
			config.PprofFlag("ORCHD_PPROF_ADDR"),
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
	policy, err := admission.ParsePolicy(c.String("admission-policy"))
	if err != nil {
		return fmt.Errorf("--admission-policy/ORCHD_ADMISSION_POLICY: %w", err)
	}
	capacity := c.Int("admission-capacity")
	if capacity < 1 {
		return fmt.Errorf("--admission-capacity/ORCHD_ADMISSION_CAPACITY %d: want at least 1", capacity)
	}
	backlog := c.Int("engine-backlog")
	if backlog < 0 {
		return fmt.Errorf("--engine-backlog/ORCHD_ENGINE_BACKLOG %d: want 0 or more", backlog)
	}
	ttftWeight := c.Float64("ttft-weight")
	if ttftWeight <= 0 || ttftWeight > 100 {
		return fmt.Errorf("--ttft-weight/ORCHD_TTFT_WEIGHT %v: want more than 0, at most 100", ttftWeight)
	}
	weights, err := scheduler.ParseWeights(c.String("score-weights"))
	if err != nil {
		return fmt.Errorf("--score-weights/ORCHD_SCORE_WEIGHTS: %w", err)
	}
	if u := c.String("prometheus-url"); u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("--prometheus-url/ORCHESTRATORD_PROMETHEUS_URL %q: want an http(s)://host:port URL", u)
		}
	}
	ln, err := config.Listen(addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	_, shutdownTracing, err := tracing.Setup(ctx, "orchestratord", version.Version, log)
	if err != nil {
		return fmt.Errorf("tracing (OTEL_* variables): %w", err)
	}
	defer func() {
		if err := shutdownTracing(context.Background()); err != nil {
			log.Warn("tracing shutdown", "err", err)
		}
	}()

	if a := c.String("pprof-addr"); a != "" {
		if err := config.ServePprof(ctx, a, log); err != nil {
			return err
		}
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var reg *registry.Registry
	var fleet dispatch.Fleet
	var util utilization.Source
	metricsInterval := config.GetDuration(c, "metrics-interval")
	if c.Bool("cloud-profile") {
		timeout := config.GetDuration(c, "node-timeout")
		interval := config.GetDuration(c, "stale-check-interval")
		reg = registry.New(registry.Options{Timeout: timeout, Logger: log})
		promReg.MustRegister(reg)
		go reg.RunStaleChecker(ctx, interval)
		fleet = controlplane.RegistryFleet{Registry: reg}
		log.Info("cloud profile: node registry on", "node_timeout", timeout, "stale_check_interval", interval)
		if c.String("prometheus-url") == "" {
			scraper := utilization.NewScraper(func() []utilization.Target {
				nodes := reg.List(false)
				out := make([]utilization.Target, len(nodes))
				for i, n := range nodes {
					out[i] = utilization.Target{NodeID: n.NodeID, Address: n.Address}
				}
				return out
			}, metricsInterval, log)
			promReg.MustRegister(scraper)
			go scraper.Run(ctx)
			util = scraper
			log.Info("placement reads utilisation by scraping the node agents", "interval", metricsInterval)
		}
	} else {
		dir := c.String("runtime-dir")
		local := pool.NewTable(nil)
		w, err := handoff.NewWatcher(handoff.WatcherOptions{Dir: dir, Sink: local, Logger: log, Registerer: promReg})
		if err != nil {
			return err
		}
		go func() {
			if err := w.Run(ctx); err != nil {
				log.Error("handoff watcher stopped", "err", err)
			}
		}()
		fleet = controlplane.LocalFleet{Pools: local}
		log.Info("home profile: serving the engines announced in the local runtime dir", "runtime_dir", dir)
	}
	if u := c.String("prometheus-url"); u != "" {
		pq, err := utilization.NewPromQL(u, metricsInterval)
		if err != nil {
			return err
		}
		promReg.MustRegister(pq)
		go pq.Run(ctx, log)
		util = pq
		log.Info("placement reads utilisation from Prometheus", "url", u, "interval", metricsInterval)
	}

	dm := dispatch.NewMetrics(promReg)
	dispatcher, err := dispatch.New(dispatch.Options{
		Fleet: fleet, Util: util, Queue: admission.New(capacity, policy), Logger: log, Metrics: dm, Backlog: backlog, TTFTWeight: ttftWeight,
		Scheduling: scheduler.Options{Weights: weights, StaleAfter: config.GetDuration(c, "metrics-stale-after"), Quarantine: config.GetDuration(c, "quarantine")},
	})
	if err != nil {
		return err
	}
	promReg.MustRegister(dispatcher)
	// Heartbeats do not wake the dispatcher: its fleet snapshot changes at
	// most every 100 ms, which its own tick covers; waking it on each of
	// thousands of heartbeats a second would only repeat passes.
	go dispatcher.Run(ctx)
	tasks := dispatch.NewStore(5 * time.Minute)
	go tasks.Run(ctx)
	var toEngines http.RoundTripper = &http.Transport{
		Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: 128, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	if tracing.Enabled() {
		// Only when traces go somewhere: the wrapper costs every read of
		// every stream.
		toEngines = tracing.Transport(toEngines)
	}
	engines := &http.Client{Transport: toEngines}
	inference := &controlplane.Inference{
		Fleet: fleet, Dispatcher: dispatcher, Tasks: tasks, Metrics: dm,
		Runner: dispatch.NewRunner(dispatcher, engines, log),
		Proxy:  dispatch.NewProxy(dispatcher, engines, log),
	}
	log.Info("admission", "capacity", capacity, "policy", policy)
	attrs := []any{"addr", ln.Addr().String(), "version", version.Version, "cloud_profile", reg != nil}
	if token != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(token))
	}
	log.Info("orchestratord listening", attrs...)

	h := controlplane.NewHandler(controlplane.Options{Registry: reg, Token: token, Version: version.Version, Gatherer: promReg, Logger: log, Inference: inference})
	if tracing.Enabled() {
		h = tracing.Handler(h, "orchestratord")
	}
	if err := config.Serve(ctx, ln, h, 10*time.Second, log); err != nil {
		return err
	}
	log.Info("orchestratord stopped")
	return nil
}

func defaultWeights() string {
	var parts []string
	for _, name := range []string{scheduler.ExpectedLatencyName, scheduler.GPUUtilizationName, scheduler.FreeVRAMName,
		scheduler.SessionAffinityName, scheduler.PreferName} {
		parts = append(parts, fmt.Sprintf("%s=%d", name, scheduler.DefaultWeights[name]))
	}
	return strings.Join(parts, ",")
}
