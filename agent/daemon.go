package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/enginepoll"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/supervisor"
	"github.com/llorch/llorch/tracing"
)

// Daemon is pool-managerd: the pool table fed by the handoff watcher, the
// engines it launches (supervisor), the GPU and engine pollers, the
// exporter, the HTTP routes and, in the cloud profile, the Agent. NewDaemon
// builds it; Run serves until its context ends, then shuts down (see Run).
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	gatherer prometheus.Gatherer
	pools    *pool.Table
	watcher  *handoff.Watcher
	gpus     *exporter.Poller // nil: no GPU source
	engines  *enginepoll.Poller
	sup      *supervisor.Supervisor // nil: no engines to launch
	agent    *Agent                 // nil outside the cloud profile
	handler  http.Handler

	// Pools drained over HTTP: drainCtx ends when shutdown takes over
	// their engines; drainers are the goroutines waiting to stop them.
	drainCtx   context.Context
	stopDrains context.CancelFunc
	drainers   sync.WaitGroup
	mu         sync.Mutex
	draining   map[string]bool // pools with a drainer
	closing    bool            // shutdown began: no new drainers
}

// NewDaemon validates cfg and builds the daemon; nothing runs until Run.
// It opens the GPU source, so an explicit --gpu-source that cannot be read
// (nvml without a driver) fails here, before the agent listens.
func NewDaemon(cfg Config) (*Daemon, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	simBinary, err := findEngines(cfg.Engines, cfg.SimBinary)
	if err != nil {
		return nil, err
	}
	nodeID := cfg.Registration.NodeID
	d := &Daemon{cfg: cfg, log: cfg.Logger.With("node_id", nodeID), pools: pool.NewTable(cfg.Pools), draining: map[string]bool{}}
	d.drainCtx, d.stopDrains = context.WithCancel(context.Background())

	reg := prometheus.NewRegistry()
	d.gatherer = reg
	// Every series this agent exports carries node_id (SPEC §7).
	metrics := prometheus.WrapRegistererWith(prometheus.Labels{"node_id": nodeID}, reg)
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if d.gpus, err = openGPUs(cfg.GPU, nodeID, d.pools, d.log); err != nil {
		return nil, err
	}
	d.watcher, err = handoff.NewWatcher(handoff.WatcherOptions{
		Dir: cfg.RuntimeDir, Mode: cfg.WatchMode, PollInterval: cfg.WatchInterval, RescanInterval: cfg.RescanInterval,
		Sink: d.pools, Logger: d.log, Registerer: metrics,
	})
	if err != nil {
		return nil, err
	}
	d.engines = enginepoll.New(d.pools, d.pools, cfg.EnginePollInterval)
	inventory := NewInventory(d.gpus)
	gpuSource := GPUNone
	if d.gpus != nil {
		gpuSource = d.gpus.Source().Name()
	}
	metrics.MustRegister(exporter.New(map[string]exporter.Collector{
		"gpu":    exporter.NewGPUCollector(d.gpus, gpuSource),
		"pools":  exporter.NewPoolsCollector(PoolsWithVRAM{Pools: d.pools, GPUs: inventory}),
		"engine": exporter.NewEngineCollector(d.engines),
	}, d.log))

	if len(cfg.Engines) > 0 {
		d.sup, err = supervisor.New(supervisor.Options{
			RuntimeDir: cfg.RuntimeDir, EngineHost: cfg.EngineHost, SimBinary: simBinary, Errors: d.pools, Breaker: cfg.Breaker,
			Logger: d.log, Registerer: metrics,
		})
		if err != nil {
			return nil, err
		}
	}
	if cfg.Cloud {
		d.agent, err = New(Options{
			Registration: cfg.Registration,
			// No client timeout: every call's context bounds it
			// (RequestTimeout, or --shutdown-timeout at shutdown).
			ControlPlane: api.NewClientFor(cfg.ControlPlaneURL, cfg.Token, &http.Client{Transport: tracing.Transport(nil)}),
			Pools:        d.pools, GPUs: inventory, HeartbeatInterval: cfg.HeartbeatInterval,
			Logger: d.log, Registerer: metrics,
		})
		if err != nil {
			return nil, err
		}
	}
	d.handler = NewHandler(HandlerOptions{Pools: d.pools, Token: cfg.Token, Version: cfg.Version, Gatherer: reg, Logger: d.log, Drain: d.DrainPool})
	if tracing.Enabled() {
		d.handler = tracing.Handler(d.handler, "pool-managerd")
	}
	return d, nil
}

// Run serves until ctx ends, then shuts down in the order of SPEC §4 (see
// shutdown) and returns. Its error joins whatever failed: starting (the
// listener, an engine), a background service (the HTTP server, the handoff
// watcher), and each failed step of the shutdown, which runs to its end
// regardless. nil means a clean stop: exit 0. Run is meant to be called
// once.
func (d *Daemon) Run(ctx context.Context) error {
	ln := d.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = config.Listen(d.cfg.Addr); err != nil {
			return err
		}
	}
	// The HTTP server, the watcher and the pollers outlive ctx: they serve
	// through the shutdown sequence and stop last.
	bg := newBackground()
	bg.run("", func(ctx context.Context) error { return config.Serve(ctx, ln, d.handler, 5*time.Second, d.log) })
	bg.run("handoff watcher", d.watcher.Run)
	bg.run("", func(ctx context.Context) error { d.engines.Run(ctx); return nil })
	if d.gpus != nil {
		bg.run("", func(ctx context.Context) error { d.gpus.Run(ctx); return nil })
	}
	d.logListening(ln.Addr())

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	var agentDone <-chan struct{}
	err := d.startEngines()
	if err == nil {
		agentDone = d.startAgent(agentCtx)
		select {
		case <-ctx.Done():
		case <-bg.failed:
		}
	}
	stopAgent()
	err = errors.Join(err, d.shutdown(agentDone), bg.stop())
	if err != nil {
		d.log.Error("pool-managerd stopped with errors", "err", err)
		return err
	}
	d.log.Info("pool-managerd stopped")
	return nil
}

func (d *Daemon) logListening(addr net.Addr) {
	attrs := []any{"addr", addr.String(), "version", d.cfg.Version, "cloud_profile", d.cfg.Cloud, "pools", d.cfg.Pools, "runtime_dir", d.cfg.RuntimeDir}
	if d.cfg.Token != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(d.cfg.Token))
	}
	d.log.Info("pool-managerd listening", attrs...)
}

// startEngines launches the configured engines.
func (d *Daemon) startEngines() error {
	if d.sup == nil {
		return nil
	}
	for _, spec := range d.cfg.Engines {
		if err := d.sup.Start(spec); err != nil {
			return err
		}
	}
	return nil
}

// startAgent runs the Agent until ctx ends; the channel is closed then
// (nil outside the cloud profile).
func (d *Daemon) startAgent(ctx context.Context) <-chan struct{} {
	if d.agent == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Register with the GPU inventory when the source answers fast;
		// never hold registration hostage to a slow driver.
		if d.gpus != nil {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			d.gpus.WaitFirst(wctx)
			cancel()
		}
		d.agent.Run(ctx)
	}()
	return done
}

// background runs the services that outlive Run's context until stop.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// failed is closed when a service returns an error.
	failed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	errs   []error
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel, failed: make(chan struct{})}
}

// run runs fn until stop; its error, prefixed with name, fails the
// background.
func (b *background) run(name string, fn func(context.Context) error) {
	b.wg.Go(func() {
		err := fn(b.ctx)
		if err == nil {
			return
		}
		if name != "" {
			err = fmt.Errorf("%s: %w", name, err)
		}
		b.mu.Lock()
		b.errs = append(b.errs, err)
		b.mu.Unlock()
		b.once.Do(func() { close(b.failed) })
	})
}

// stop ends every service, waits for them and returns their errors.
func (b *background) stop() error {
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return errors.Join(b.errs...)
}
