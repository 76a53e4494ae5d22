package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/registry/etcdstore"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/tracing"
	"github.com/llorch/llorch/utilization"
)

// Config is orchestratord's configuration, one field per flag (SPEC §2,
// docs/configuration.md); DefaultConfig holds the flags' defaults. New
// validates it, and its errors name the flag and its variable.
type Config struct {
	Addr               string        // --addr
	CloudProfile       bool          // --cloud-profile
	NodeTimeout        time.Duration // --node-timeout
	StaleCheckInterval time.Duration // --stale-check-interval
	APIToken           string        // --api-token
	AdmissionCapacity  int           // --admission-capacity
	AdmissionPolicy    string        // --admission-policy: reject or drop-lru
	PrometheusURL      string        // --prometheus-url; empty: scrape the agents
	RuntimeDir         string        // --runtime-dir (HOME profile)
	ScoreWeights       string        // --score-weights, over scheduler.DefaultWeights
	MetricsInterval    time.Duration // --metrics-interval
	MetricsStaleAfter  time.Duration // --metrics-stale-after
	TTFTWeight         float64       // --ttft-weight
	EngineBacklog      int           // --engine-backlog
	Quarantine         time.Duration // --quarantine
	PprofAddr          string        // --pprof-addr; empty: off
	// ShutdownGrace (--shutdown-grace) is how long running tasks may
	// finish once shutdown began before they are stopped.
	ShutdownGrace      time.Duration
	EngineStallTimeout time.Duration // --engine-stall-timeout; 0: never
	ClientWriteTimeout time.Duration // --client-write-timeout; 0: never
	Registry           string        // --registry: memory or etcd
	Etcd               EtcdConfig    // --etcd-*, with --registry etcd

	Version string
	Logger  *slog.Logger // nil: slog.Default()
}

// DefaultConfig returns the defaults of orchestratord's flags.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:8080", NodeTimeout: 30 * time.Second, StaleCheckInterval: 10 * time.Second,
		AdmissionCapacity: 100, AdmissionPolicy: string(admission.Reject), RuntimeDir: ".runtime/engines",
		MetricsInterval: 2 * time.Second, MetricsStaleAfter: 10 * time.Second, TTFTWeight: scheduler.DefaultTTFTWeight,
		Quarantine: 30 * time.Second, ShutdownGrace: 30 * time.Second, Version: "dev",
		EngineStallTimeout: 30 * time.Second, ClientWriteTimeout: 30 * time.Second,
		Registry: RegistryMemory, Etcd: EtcdConfig{Prefix: "/llorch/"},
	}
}

// settings are what New reads from a Config beyond its plain values.
type settings struct {
	policy  admission.Policy
	weights map[string]int64
}

// validate checks cfg before anything starts, naming the flag and the
// variable of a bad value.
func (cfg *Config) validate() (settings, error) {
	var s settings
	if err := api.CheckExposure(cfg.Addr, cfg.APIToken); err != nil {
		return s, err
	}
	var err error
	if s.policy, err = admission.ParsePolicy(cfg.AdmissionPolicy); err != nil {
		return s, fmt.Errorf("--admission-policy/ORCHD_ADMISSION_POLICY: %w", err)
	}
	if cfg.AdmissionCapacity < 1 {
		return s, fmt.Errorf("--admission-capacity/ORCHD_ADMISSION_CAPACITY %d: want at least 1", cfg.AdmissionCapacity)
	}
	if cfg.EngineBacklog < 0 {
		return s, fmt.Errorf("--engine-backlog/ORCHD_ENGINE_BACKLOG %d: want 0 or more", cfg.EngineBacklog)
	}
	if cfg.TTFTWeight <= 0 || cfg.TTFTWeight > 100 {
		return s, fmt.Errorf("--ttft-weight/ORCHD_TTFT_WEIGHT %v: want more than 0, at most 100", cfg.TTFTWeight)
	}
	if s.weights, err = scheduler.ParseWeights(cfg.ScoreWeights); err != nil {
		return s, fmt.Errorf("--score-weights/ORCHD_SCORE_WEIGHTS: %w", err)
	}
	if u := cfg.PrometheusURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return s, fmt.Errorf("--prometheus-url/ORCHESTRATORD_PROMETHEUS_URL %q: want an http(s)://host:port URL", u)
		}
	}
	if cfg.ShutdownGrace < 0 {
		return s, fmt.Errorf("--shutdown-grace/ORCHD_SHUTDOWN_GRACE %v: want 0 or more", cfg.ShutdownGrace)
	}
	for name, d := range map[string]time.Duration{"--node-timeout/ORCHESTRATORD_NODE_TIMEOUT_MS": cfg.NodeTimeout,
		"--stale-check-interval/ORCHESTRATORD_STALE_CHECK_INTERVAL_SECS": cfg.StaleCheckInterval,
		"--metrics-interval/ORCHD_METRICS_INTERVAL_MS":                   cfg.MetricsInterval} {
		if d <= 0 {
			return s, fmt.Errorf("%s %v: must be positive", name, d)
		}
	}
	if err := cfg.validateRegistry(); err != nil {
		return s, err
	}
	if cfg.PprofAddr != "" {
		if err := config.CheckPprofAddr(cfg.PprofAddr); err != nil {
			return s, err
		}
	}
	return s, nil
}

// Daemon is a whole control plane: the node registry (CLOUD profile) or
// the local engines' handoff files (HOME), utilisation for placement, the
// dispatcher, the task runner and OpenAI proxy, the task store, metrics
// and the HTTP server. New builds it and binds its address; Run serves
// until its context ends, then shuts down (see Run).
type Daemon struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener

	prom       *prometheus.Registry
	reg        *registry.Registry // nil in the HOME profile
	shared     *etcdstore.Store   // --registry etcd; nil otherwise
	dispatcher *dispatch.Dispatcher
	runner     *dispatch.Runner
	tasks      *dispatch.Store
	handler    http.Handler
	engines    *http.Client
	// background are the loops Run starts and stops with the daemon.
	background []func(context.Context)
}

// New validates cfg, binds its address and builds the control plane. A
// bad value or a taken port fails here, before anything starts.
func New(cfg Config) (*Daemon, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, prom: prometheus.NewRegistry()}
	d.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fleet, err := d.newFleet()
	if err != nil {
		return nil, err
	}
	util, err := d.newUtilization()
	if err != nil {
		return nil, err
	}
	in, err := d.newInference(fleet, util, s)
	if err != nil {
		return nil, err
	}
	h := NewHandler(Options{Registry: d.reg, Shared: d.sharedCondition(), Token: cfg.APIToken, Version: cfg.Version, Gatherer: d.prom, Logger: d.log, Inference: in})
	if tracing.Enabled() {
		h = tracing.Handler(h, "orchestratord")
	}
	d.handler = h
	if d.ln, err = config.Listen(cfg.Addr); err != nil {
		return nil, err
	}
	return d, nil
}

// Addr is the address the daemon listens on (the port chosen, for ":0").
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

// Gatherer serves the daemon's metrics, as GET /metrics does.
func (d *Daemon) Gatherer() prometheus.Gatherer { return d.prom }

// Registry is the node registry; nil in the HOME profile.
func (d *Daemon) Registry() *registry.Registry { return d.reg }

// newFleet builds where pools come from: the node registry (CLOUD) or the
// runtime dir's handoff files (HOME).
func (d *Daemon) newFleet() (dispatch.Fleet, error) {
	cfg := d.cfg
	if cfg.CloudProfile {
		d.reg = registry.New(registry.Options{Timeout: cfg.NodeTimeout, Logger: d.log})
		d.prom.MustRegister(d.reg)
		if cfg.Registry == RegistryEtcd {
			if err := d.shareRegistry(); err != nil {
				return nil, err
			}
			return RegistryFleet{Registry: d.reg, Peers: d.shared.Peers}, nil
		}
		d.goBackground(func(ctx context.Context) { d.reg.RunStaleChecker(ctx, cfg.StaleCheckInterval) })
		d.log.Info("cloud profile: node registry on", "node_timeout", cfg.NodeTimeout, "stale_check_interval", cfg.StaleCheckInterval)
		return RegistryFleet{Registry: d.reg}, nil
	}
	local := pool.NewTable(nil)
	w, err := handoff.NewWatcher(handoff.WatcherOptions{Dir: cfg.RuntimeDir, Sink: local, Logger: d.log, Registerer: d.prom})
	if err != nil {
		return nil, err
	}
	d.goBackground(func(ctx context.Context) {
		if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("handoff watcher stopped", "err", err)
		}
	})
	d.log.Info("home profile: serving the engines announced in the local runtime dir", "runtime_dir", cfg.RuntimeDir)
	return LocalFleet{Pools: local}, nil
}

// newUtilization builds placement's utilisation source: PromQL against
// --prometheus-url, else (CLOUD) a scraper of the agents, else none.
func (d *Daemon) newUtilization() (utilization.Source, error) {
	cfg := d.cfg
	if u := cfg.PrometheusURL; u != "" {
		pq, err := utilization.NewPromQL(u, cfg.MetricsInterval)
		if err != nil {
			return nil, err
		}
		d.prom.MustRegister(pq)
		d.goBackground(func(ctx context.Context) { pq.Run(ctx, d.log) })
		d.log.Info("placement reads utilisation from Prometheus", "url", u, "interval", cfg.MetricsInterval)
		return pq, nil
	}
	if d.reg == nil {
		return nil, nil
	}
	// The targets are rebuilt when the fleet's membership changes, not on
	// every turn: listing and sorting a large fleet every interval was
	// work that grew with the fleet while nothing changed.
	var cached []utilization.Target
	cachedAt := ^uint64(0)
	scraper := utilization.NewScraper(func() []utilization.Target {
		if m := d.reg.Membership(); m != cachedAt {
			nodes := d.reg.Addresses()
			slices.SortFunc(nodes, func(a, b registry.Address) int { return strings.Compare(a.NodeID, b.NodeID) }) // stable turns
			out := make([]utilization.Target, len(nodes))
			for i, n := range nodes {
				out[i] = utilization.Target{NodeID: n.NodeID, Address: n.URL}
			}
			cached, cachedAt = out, m
		}
		return cached
	}, cfg.MetricsInterval, d.log)
	d.prom.MustRegister(scraper)
	d.goBackground(scraper.Run)
	d.log.Info("placement reads utilisation by scraping the node agents", "interval", cfg.MetricsInterval)
	return scraper, nil
}

// newInference builds the task path: the dispatcher and its queue, the
// runner and proxy sharing one engine client, the task store.
func (d *Daemon) newInference(fleet dispatch.Fleet, util utilization.Source, s settings) (*Inference, error) {
	cfg := d.cfg
	dm := dispatch.NewMetrics(d.prom)
	var err error
	d.dispatcher, err = dispatch.New(dispatch.Options{
		Fleet: fleet, Util: util, Queue: admission.New(cfg.AdmissionCapacity, s.policy), Logger: d.log, Metrics: dm,
		Backlog: cfg.EngineBacklog, TTFTWeight: cfg.TTFTWeight,
		StallTimeout: cfg.EngineStallTimeout, ClientWriteTimeout: cfg.ClientWriteTimeout,
		Scheduling: scheduler.Options{Weights: s.weights, StaleAfter: cfg.MetricsStaleAfter, Quarantine: cfg.Quarantine},
	})
	if err != nil {
		return nil, err
	}
	d.prom.MustRegister(d.dispatcher)
	// Heartbeats do not wake the dispatcher: its fleet snapshot changes at
	// most every 100 ms, which its own tick covers; waking it on each of
	// thousands of heartbeats a second would only repeat passes.
	d.goBackground(d.dispatcher.Run)
	if d.shared != nil {
		// The other replicas count this one's tasks on each pool.
		d.goBackground(func(ctx context.Context) { d.shared.PublishInFlight(ctx, d.dispatcher.InFlight) })
	}
	d.tasks = dispatch.NewStore(5 * time.Minute)
	d.goBackground(d.tasks.Run)
	engines := engineClient()
	d.engines = engines
	d.runner = dispatch.NewRunner(d.dispatcher, engines, d.log)
	d.log.Info("admission", "capacity", cfg.AdmissionCapacity, "policy", s.policy)
	return &Inference{Fleet: fleet, Dispatcher: d.dispatcher, Tasks: d.tasks, Metrics: dm, Runner: d.runner,
		Proxy: dispatch.NewProxy(d.dispatcher, engines, d.log)}, nil
}

// engineClient is the HTTP client of every engine request: connection
// reuse for many concurrent streams, traced only when traces go somewhere
// (the wrapper costs every read of every stream).
func engineClient() *http.Client {
	var rt http.RoundTripper = &http.Transport{
		Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: 128, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	if tracing.Enabled() {
		rt = tracing.Transport(rt)
	}
	return &http.Client{Transport: rt}
}

// goBackground registers a loop for Run to start.
func (d *Daemon) goBackground(loop func(context.Context)) { d.background = append(d.background, loop) }
