package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/version"
)

// newApp is orchestratord's command line: its flags and variables are a
// contract (SPEC §2, docs/configuration.md); their defaults are
// controlplane.DefaultConfig's.
func newApp() *cli.App {
	def := controlplane.DefaultConfig()
	return &cli.App{
		Name:    "orchestratord",
		Usage:   "llorch control plane: node registry, task admission, placement and streaming for llama.cpp engines",
		Version: version.Version,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: def.Addr, Usage: "listen address (host:port)", EnvVars: []string{"ORCHESTRATORD_ADDR", "ORCHD_ADDR"}},
			&cli.BoolFlag{Name: "cloud-profile", Usage: "keep a registry of node agents that register and heartbeat (CLOUD profile)", EnvVars: []string{"ORCHESTRATORD_CLOUD_PROFILE"}},
			config.DurationFlag("node-timeout", def.NodeTimeout, time.Millisecond, "a node with no heartbeat for this long is offline", "ORCHESTRATORD_NODE_TIMEOUT_MS"),
			config.DurationFlag("stale-check-interval", def.StaleCheckInterval, time.Second, "how often to look for nodes past --node-timeout", "ORCHESTRATORD_STALE_CHECK_INTERVAL_SECS"),
			&cli.StringFlag{Name: "api-token", Usage: "bearer token required on every route but /health and /metrics; required on a non-loopback --addr", EnvVars: []string{"LLORCH_API_TOKEN"}},
			&cli.IntFlag{Name: "admission-capacity", Value: def.AdmissionCapacity, Usage: "tasks that may wait for a pool; beyond it the admission policy applies", EnvVars: []string{"ORCHD_ADMISSION_CAPACITY"}},
			&cli.StringFlag{Name: "admission-policy", Value: def.AdmissionPolicy, Usage: "when the queue is full: reject (429 ADMISSION_REJECT) or drop-lru (evict the oldest batch task)", EnvVars: []string{"ORCHD_ADMISSION_POLICY"}},
			&cli.StringFlag{Name: "prometheus-url", Usage: "read utilisation for placement from this Prometheus (PromQL) instead of scraping the node agents directly", EnvVars: []string{"ORCHESTRATORD_PROMETHEUS_URL"}},
			&cli.StringFlag{Name: "runtime-dir", Value: def.RuntimeDir, Usage: "HOME profile: the local engines' handoff directory", EnvVars: []string{"ORCHD_RUNTIME_DIR"}},
			&cli.StringFlag{Name: "score-weights", Usage: "placement score weights, name=weight comma-separated over the defaults (" + defaultWeights() + "); 0 disables one", EnvVars: []string{"ORCHD_SCORE_WEIGHTS"}},
			config.DurationFlag("metrics-interval", def.MetricsInterval, time.Millisecond, "how often utilisation is read (agents' /metrics or PromQL)", "ORCHD_METRICS_INTERVAL_MS"),
			config.DurationFlag("metrics-stale-after", def.MetricsStaleAfter, time.Millisecond, "utilisation older than this is ignored; placement falls back to registry state", "ORCHD_METRICS_STALE_AFTER_MS"),
			&cli.Float64Flag{Name: "ttft-weight", Value: def.TTFTWeight, Usage: "how much more placement values the first token than the rest of the answer: a task waits for a faster pool only if its answer would end (1 + this) times the wait sooner there", EnvVars: []string{"ORCHD_TTFT_WEIGHT"}},
			&cli.IntFlag{Name: "engine-backlog", Value: def.EngineBacklog, Usage: "tasks an engine may hold waiting beyond its slots; 0 holds every waiting task in this control plane's queue (priorities hold, and the pool is chosen when a slot frees)", EnvVars: []string{"ORCHD_ENGINE_BACKLOG"}},
			config.DurationFlag("quarantine", def.Quarantine, time.Millisecond, "how long a pool that failed a dispatch gets no new tasks", "ORCHD_QUARANTINE_MS"),
			config.DurationFlag("engine-stall-timeout", def.EngineStallTimeout, time.Second, "an engine that sends nothing for this long - before its first byte (a wedged engine; at least 4x the task's predicted time to first token) or between two - is cut: the task moves to another pool if nothing reached its client, else ends with WORKER_RESET; 0: never", "ORCHD_ENGINE_STALL_TIMEOUT"),
			config.DurationFlag("client-write-timeout", def.ClientWriteTimeout, time.Second, "a client that takes none of a streamed write for this long is dropped and its engine slot freed; 0: never", "ORCHD_CLIENT_WRITE_TIMEOUT"),
			config.DurationFlag("shutdown-grace", def.ShutdownGrace, time.Second, "on SIGTERM/SIGINT, how long running tasks may finish before they are stopped (queued ones end at once)", "ORCHD_SHUTDOWN_GRACE"),
			config.PprofFlag("ORCHD_PPROF_ADDR"),
			&cli.StringFlag{Name: "registry", Value: def.Registry, Usage: "where the node registry lives: memory (this process alone) or etcd (shared by every orchestratord on the same --etcd-endpoints and --etcd-prefix; run several)", EnvVars: []string{"ORCHD_REGISTRY"}},
			&cli.StringFlag{Name: "etcd-endpoints", Usage: "with --registry etcd: etcd's client URLs, comma-separated", EnvVars: []string{"ORCHD_ETCD_ENDPOINTS"}},
			&cli.StringFlag{Name: "etcd-prefix", Value: def.Etcd.Prefix, Usage: "with --registry etcd: the key prefix the fleet lives under; control planes that share it share the fleet", EnvVars: []string{"ORCHD_ETCD_PREFIX"}},
			&cli.StringFlag{Name: "etcd-username", Usage: "with --registry etcd: user of etcd's authentication", EnvVars: []string{"ORCHD_ETCD_USERNAME"}},
			&cli.StringFlag{Name: "etcd-password", Usage: "with --registry etcd: that user's password (prefer the variable to the flag)", EnvVars: []string{"ORCHD_ETCD_PASSWORD"}},
			&cli.StringFlag{Name: "etcd-ca-file", Usage: "with --registry etcd: CA certificate (PEM) that signs etcd's server certificate; enables TLS", EnvVars: []string{"ORCHD_ETCD_CA_FILE"}},
			&cli.StringFlag{Name: "etcd-cert-file", Usage: "with --registry etcd: client certificate (PEM) for etcd's client-cert authentication; with --etcd-key-file", EnvVars: []string{"ORCHD_ETCD_CERT_FILE"}},
			&cli.StringFlag{Name: "etcd-key-file", Usage: "with --registry etcd: the client certificate's key (PEM)", EnvVars: []string{"ORCHD_ETCD_KEY_FILE"}},
		}, config.LogFlags()...),
		Action:       run,
		OnUsageError: config.UsageError,
	}
}

// configFrom reads the flags into the daemon's configuration.
func configFrom(c *cli.Context) (controlplane.Config, error) {
	log, err := config.NewLogger(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return controlplane.Config{}, err
	}
	return controlplane.Config{
		Addr:               c.String("addr"),
		CloudProfile:       c.Bool("cloud-profile"),
		NodeTimeout:        config.GetDuration(c, "node-timeout"),
		StaleCheckInterval: config.GetDuration(c, "stale-check-interval"),
		APIToken:           c.String("api-token"),
		AdmissionCapacity:  c.Int("admission-capacity"),
		AdmissionPolicy:    c.String("admission-policy"),
		PrometheusURL:      c.String("prometheus-url"),
		RuntimeDir:         c.String("runtime-dir"),
		ScoreWeights:       c.String("score-weights"),
		MetricsInterval:    config.GetDuration(c, "metrics-interval"),
		MetricsStaleAfter:  config.GetDuration(c, "metrics-stale-after"),
		TTFTWeight:         c.Float64("ttft-weight"),
		EngineBacklog:      c.Int("engine-backlog"),
		Quarantine:         config.GetDuration(c, "quarantine"),
		ShutdownGrace:      config.GetDuration(c, "shutdown-grace"),
		EngineStallTimeout: config.GetDuration(c, "engine-stall-timeout"),
		ClientWriteTimeout: config.GetDuration(c, "client-write-timeout"),
		PprofAddr:          c.String("pprof-addr"),
		Registry:           c.String("registry"),
		Etcd: controlplane.EtcdConfig{
			Endpoints: splitList(c.String("etcd-endpoints")), Prefix: c.String("etcd-prefix"),
			Username: c.String("etcd-username"), Password: c.String("etcd-password"),
			CAFile: c.String("etcd-ca-file"), CertFile: c.String("etcd-cert-file"), KeyFile: c.String("etcd-key-file"),
		},
		Version: version.Version,
		Logger:  log,
	}, nil
}

// run starts the control plane and serves until SIGTERM or SIGINT; a
// second signal during the shutdown kills the process at once.
func run(c *cli.Context) error {
	cfg, err := configFrom(c)
	if err != nil {
		return err
	}
	d, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // the next signal has its default effect
	}()
	return d.Run(ctx)
}

func defaultWeights() string {
	var parts []string
	for _, name := range []string{scheduler.ExpectedLatencyName, scheduler.GPUUtilizationName, scheduler.FreeVRAMName,
		scheduler.SessionAffinityName, scheduler.PreferName} {
		parts = append(parts, fmt.Sprintf("%s=%d", name, scheduler.DefaultWeights[name]))
	}
	return strings.Join(parts, ",")
}

// splitList reads a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
