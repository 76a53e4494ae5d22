package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/backoff"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/handoff"
)

// LastErrorSink receives a pool's last engine error (the pool table).
type LastErrorSink interface {
	SetLastError(poolID, msg string)
}

// Breaker opens after MaxCrashes crashes within Window; while open the
// engine is not restarted. After Cooldown one start is tried: the breaker
// closes once that engine is healthy, and opens again for another Cooldown
// if it fails.
type Breaker struct {
	MaxCrashes int
	Window     time.Duration
	Cooldown   time.Duration
}

// Options configure a Supervisor.
type Options struct {
	RuntimeDir string
	// EngineHost is the address engines listen on and are announced at
	// (their handoff URL): 127.0.0.1 (the default) serves a control plane
	// on this machine only; a control plane elsewhere needs an address it
	// can reach.
	EngineHost string
	// SimBinary is the llorch binary that runs `sim-engine`.
	SimBinary string
	Errors    LastErrorSink
	Backoff   backoff.Backoff
	Breaker   Breaker
	// StopGrace is how long an engine may take to exit after SIGTERM.
	StopGrace time.Duration
	// ProbeInterval and ProbeFailures: an engine failing that many
	// consecutive /health probes is announced not ready until it recovers.
	ProbeInterval time.Duration
	ProbeFailures int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Supervisor runs one runner per pool spec.
type Supervisor struct {
	opts    Options
	log     *slog.Logger
	probe   *http.Client
	metrics *metrics

	mu       sync.Mutex
	runners  []*runner
	stopping bool
	wg       sync.WaitGroup
}

// New validates the options and registers the engine metrics.
func New(opts Options) (*Supervisor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Backoff.Base <= 0 {
		opts.Backoff = backoff.Backoff{Base: time.Second, Max: time.Minute}
	}
	if opts.Breaker.MaxCrashes <= 0 {
		opts.Breaker = Breaker{MaxCrashes: 5, Window: 5 * time.Minute, Cooldown: 5 * time.Minute}
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.EngineHost == "" {
		opts.EngineHost = "127.0.0.1"
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 2 * time.Second
	}
	if opts.ProbeFailures <= 0 {
		opts.ProbeFailures = 3
	}
	if err := os.MkdirAll(opts.RuntimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("runtime dir: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Supervisor{
		opts:    opts,
		log:     opts.Logger,
		probe:   &http.Client{Timeout: 2 * time.Second},
		metrics: m,
	}, nil
}

// Start launches the engine of spec and supervises it until Shutdown.
func (s *Supervisor) Start(spec Spec) error {
	if spec.healthTimeout == 0 {
		if err := spec.Normalize(); err != nil {
			return fmt.Errorf("pool %s: %w", spec.PoolID, err)
		}
	}
	if spec.Engine == EngineSim && s.opts.SimBinary == "" {
		return fmt.Errorf("pool %s: engine \"sim\" needs the llorch binary: none found next to this program or on PATH", spec.PoolID)
	}
	r := &runner{sup: s, spec: spec, stop: make(chan struct{}), done: make(chan struct{}), log: s.log.With("pool_id", spec.PoolID)}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return fmt.Errorf("pool %s: supervisor is shutting down", spec.PoolID)
	}
	s.runners = append(s.runners, r)
	s.mu.Unlock()
	s.metrics.up.WithLabelValues(spec.PoolID).Set(0)
	s.metrics.breakerOpen.WithLabelValues(spec.PoolID).Set(0)
	s.metrics.restarts.WithLabelValues(spec.PoolID)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		r.loop()
	}()
	return nil
}

// ErrDrainDeadline is wrapped by Drain and DrainPool when ctx ended with
// requests still in flight: stopping the engine now cuts them.
var ErrDrainDeadline = errors.New("drain deadline passed with requests in flight")

// Drain waits until no engine has a request processing or deferred, or ctx
// ends. Engines keep running; call it after the pools are marked draining.
// It returns the engines that still had requests when ctx ended, each
// wrapping ErrDrainDeadline, joined.
func (s *Supervisor) Drain(ctx context.Context) error {
	return s.drain(ctx, s.runnersOf(""))
}

// DrainPool is Drain for the engines of one pool.
func (s *Supervisor) DrainPool(ctx context.Context, poolID string) error {
	return s.drain(ctx, s.runnersOf(poolID))
}

func (s *Supervisor) drain(ctx context.Context, runners []*runner) error {
	errs := make([]error, len(runners))
	var wg sync.WaitGroup
	for i, r := range runners {
		wg.Go(func() { errs[i] = r.drain(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runnersOf returns the runners of poolID, or all for "".
func (s *Supervisor) runnersOf(poolID string) []*runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*runner
	for _, r := range s.runners {
		if poolID == "" || r.spec.PoolID == poolID {
			out = append(out, r)
		}
	}
	return out
}

// Runs reports whether the supervisor started an engine for poolID (running
// or not).
func (s *Supervisor) Runs(poolID string) bool { return len(s.runnersOf(poolID)) > 0 }

// Stop stops the engines of one pool for good, as Shutdown does, and returns
// when they have exited and their handoff files are gone. The supervisor
// does not restart them.
func (s *Supervisor) Stop(poolID string) {
	runners := s.runnersOf(poolID)
	for _, r := range runners {
		r.halt()
	}
	for _, r := range runners {
		<-r.done
	}
}

// Shutdown stops every engine (SIGTERM, then SIGKILL after StopGrace) and
// returns when all have exited and their handoff files are gone. It is safe
// to call more than once.
func (s *Supervisor) Shutdown() {
	s.mu.Lock()
	s.stopping = true
	runners := append([]*runner(nil), s.runners...)
	s.mu.Unlock()
	for _, r := range runners {
		r.halt()
	}
	s.wg.Wait()
}

// PIDs returns the running engines' process ids by pool (for tests and
// status).
func (s *Supervisor) PIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, r := range s.runners {
		if pid := r.currentPID(); pid > 0 {
			out[r.spec.PoolID] = pid
		}
	}
	return out
}

// runner owns one engine process at a time.
type runner struct {
	sup  *Supervisor
	spec Spec
	log  *slog.Logger
	// stop is closed (once, by halt) to stop the runner; done when its
	// loop has returned, its engine stopped.
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu      sync.Mutex
	pid     int
	client  *engine.Client // of the ready engine; nil otherwise
	crashes []time.Time    // owned by loop
	// open is set while the breaker is open, and stays set through the
	// try after the cooldown until an engine is healthy. Owned by loop
	// (runOnce runs on its goroutine).
	open bool
}

func (r *runner) currentPID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

// halt tells the runner to stop its engine for good.
func (r *runner) halt() { r.stopOnce.Do(func() { close(r.stop) }) }

func (r *runner) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// wait sleeps d unless stopped first; it reports whether to go on.
func (r *runner) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}

func (r *runner) loop() {
	attempt := 0
	for !r.stopped() {
		began := time.Now()
		err := r.runOnce()
		if r.stopped() {
			return
		}
		r.sup.metrics.restarts.WithLabelValues(r.spec.PoolID).Inc()
		msg := err.Error()
		// An engine that ran longer than the longest backoff was healthy:
		// start the backoff over.
		if time.Since(began) > r.sup.opts.Backoff.Max {
			attempt = 0
		}
		// Still open here, the breaker was half open: the one try after
		// the cooldown failed, and it opens again at once.
		reopen := r.open
		if reopen || r.recordCrash(time.Now()) {
			b := r.sup.opts.Breaker
			if reopen {
				msg = fmt.Sprintf("circuit breaker open again: the try after the cooldown failed, next try in %v: %s", b.Cooldown, msg)
			} else {
				msg = fmt.Sprintf("circuit breaker open after %d crashes in %v, next try in %v: %s", b.MaxCrashes, b.Window, b.Cooldown, msg)
			}
			r.open = true
			r.sup.metrics.breakerOpen.WithLabelValues(r.spec.PoolID).Set(1)
			r.sup.opts.Errors.SetLastError(r.spec.PoolID, msg)
			r.log.Error("engine keeps crashing: not restarting it", "cooldown", b.Cooldown, "err", err)
			if !r.wait(b.Cooldown) {
				return
			}
			// Half open: one start is tried; the breaker reads open until
			// that engine is healthy (closeBreaker).
			attempt = 0
			continue
		}
		d := r.sup.opts.Backoff.Delay(attempt)
		attempt++
		r.sup.opts.Errors.SetLastError(r.spec.PoolID, msg)
		r.log.Warn("engine failed, restarting", "retry_in", d.Round(time.Millisecond), "attempt", attempt, "err", err)
		if !r.wait(d) {
			return
		}
	}
}

// closeBreaker closes an open breaker: an engine started after the
// cooldown is healthy. Called by runOnce, on loop's goroutine.
func (r *runner) closeBreaker() {
	if !r.open {
		return
	}
	r.open = false
	r.crashes = r.crashes[:0]
	r.sup.metrics.breakerOpen.WithLabelValues(r.spec.PoolID).Set(0)
	r.log.Info("engine healthy after the cooldown: circuit breaker closed")
}

// recordCrash notes a crash and reports whether the breaker is now open.
func (r *runner) recordCrash(now time.Time) bool {
	b := r.sup.opts.Breaker
	kept := r.crashes[:0]
	for _, t := range r.crashes {
		if now.Sub(t) <= b.Window {
			kept = append(kept, t)
		}
	}
	r.crashes = append(kept, now)
	if len(r.crashes) >= b.MaxCrashes {
		r.crashes = r.crashes[:0]
		return true
	}
	return false
}

// runOnce starts the engine and supervises it until it fails (returned as an
// error) or the runner is stopped (nil).
func (r *runner) runOnce() error {
	port, err := freePort(r.sup.opts.EngineHost)
	if err != nil {
		return err
	}
	logPath := filepath.Join(r.sup.opts.RuntimeDir, r.spec.PoolID+"_r0.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("engine log: %w", err)
	}
	bin, args := r.spec.command(r.sup.opts.SimBinary, r.sup.opts.EngineHost, port)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = os.Environ()
	if r.spec.DeviceMask != "" {
		cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+r.spec.DeviceMask)
	}
	// Own process group, so stopping reaches any children; and the engine
	// dies with the agent even if the agent is killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start engine %s: %w", bin, err)
	}
	r.mu.Lock()
	r.pid = cmd.Process.Pid
	r.mu.Unlock()
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		logFile.Close()
	}()
	url := "http://" + net.JoinHostPort(r.sup.opts.EngineHost, strconv.Itoa(port))
	r.log.Info("engine started", "pid", cmd.Process.Pid, "url", url, "engine", r.spec.Engine, "model", r.spec.Model, "log", logPath)
	defer func() {
		r.mu.Lock()
		r.pid, r.client = 0, nil
		r.mu.Unlock()
		r.sup.metrics.up.WithLabelValues(r.spec.PoolID).Set(0)
	}()

	client := engine.New(url, r.sup.probe)
	began := time.Now()
	if err := r.waitHealthy(client, cmd, exited); err != nil {
		return r.withLogTail(err, logPath)
	}
	if r.stopped() {
		r.terminate(cmd, exited)
		return nil
	}
	r.closeBreaker()
	version := "unknown"
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if props, err := client.Props(pctx); err == nil && props.BuildInfo != "" {
		version = props.BuildInfo
	}
	cancel()
	h := handoff.Handoff{
		PoolID: r.spec.PoolID, ReplicaID: "r0", Engine: "llamacpp", EngineVersion: version, URL: url,
		SlotsTotal: r.spec.Slots, SlotsFree: r.spec.Slots, DeviceMask: r.spec.DeviceMask,
		Model: handoff.Model{ID: r.spec.ModelName(), Path: r.spec.Model}, PID: cmd.Process.Pid,
	}
	announced, err := handoff.WriteFile(r.sup.opts.RuntimeDir, h)
	if err != nil {
		r.terminate(cmd, exited)
		return err
	}
	r.sup.metrics.up.WithLabelValues(r.spec.PoolID).Set(1)
	r.mu.Lock()
	r.client = client
	r.mu.Unlock()
	// Recovered: the pool's last error described an engine that is gone.
	r.sup.opts.Errors.SetLastError(r.spec.PoolID, "")
	r.log.Info("engine ready", "pid", cmd.Process.Pid, "url", url, "version", version, "took", time.Since(began).Round(time.Millisecond))
	defer os.Remove(announced) // not ready once it is gone, however it ends

	probe := time.NewTicker(r.sup.opts.ProbeInterval)
	defer probe.Stop()
	failures := 0
	for {
		select {
		case err := <-exited:
			failure := r.withLogTail(fmt.Errorf("engine exited: %w", exitError(err)), logPath)
			// Say why before the pool turns not ready, so no one sees the
			// one without the other.
			r.sup.opts.Errors.SetLastError(r.spec.PoolID, failure.Error())
			os.Remove(announced)
			return failure
		case <-r.stop:
			os.Remove(announced)
			r.terminate(cmd, exited)
			return nil
		case <-probe.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.sup.opts.ProbeInterval)
			health, err := client.Health(ctx)
			cancel()
			if err == nil && health.Ready {
				if failures >= r.sup.opts.ProbeFailures {
					if _, err := handoff.WriteFile(r.sup.opts.RuntimeDir, h); err == nil {
						r.sup.opts.Errors.SetLastError(r.spec.PoolID, "")
						r.log.Info("engine healthy again: announced ready")
					}
				}
				failures = 0
				continue
			}
			failures++
			if failures == r.sup.opts.ProbeFailures {
				reason := health.Message
				if err != nil {
					reason = err.Error()
				}
				os.Remove(announced)
				r.sup.opts.Errors.SetLastError(r.spec.PoolID, "health probe failing: "+reason)
				r.log.Warn("engine health probe failing: pool not ready", "failures", failures, "reason", reason)
			}
		}
	}
}

// waitHealthy polls /health until 200, the engine exits, the timeout
// passes, or the runner stops.
func (r *runner) waitHealthy(client *engine.Client, cmd *exec.Cmd, exited chan error) error {
	deadline := time.NewTimer(r.spec.healthTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("engine exited before it was ready: %w", exitError(err))
		case <-deadline.C:
			r.terminate(cmd, exited)
			return fmt.Errorf("engine not healthy after %v", r.spec.healthTimeout)
		case <-r.stop:
			return nil
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			h, err := client.Health(ctx)
			cancel()
			if err == nil && h.Ready {
				return nil
			}
		}
	}
}

// drain waits until the engine has no request processing or deferred, or
// ctx ends; then it returns an error wrapping ErrDrainDeadline. An engine
// that is not ready, or whose /metrics does not answer, has nothing to wait
// for.
func (r *runner) drain(ctx context.Context) error {
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if client == nil {
		return nil
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last engine.Metrics
	for {
		mctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := client.Metrics(mctx)
		cancel()
		switch {
		case err == nil && m.RequestsProcessing+m.RequestsDeferred == 0:
			return nil
		case err == nil:
			last = m
		case ctx.Err() == nil:
			return nil // the engine does not answer: nothing to wait for
		}
		select {
		case <-ctx.Done():
			r.log.Warn("drain deadline passed with requests in flight", "processing", last.RequestsProcessing, "deferred", last.RequestsDeferred)
			return fmt.Errorf("pool %s: %w (%v processing, %v deferred)", r.spec.PoolID, ErrDrainDeadline, last.RequestsProcessing, last.RequestsDeferred)
		case <-tick.C:
		}
	}
}

// terminate stops the engine's process group: SIGTERM, then SIGKILL after
// StopGrace. It returns once the process has been reaped.
func (r *runner) terminate(cmd *exec.Cmd, exited chan error) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(r.sup.opts.StopGrace)
	defer t.Stop()
	var how error
	select {
	case how = <-exited:
	case <-t.C:
		r.log.Warn("engine ignored SIGTERM: killing it", "pid", pgid, "grace", r.sup.opts.StopGrace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		how = <-exited
	}
	r.log.Info("engine stopped", "pid", pgid, "exit", exitError(how))
}

// exitError names how a process ended.
func exitError(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// withLogTail appends the engine log's last line, where the reason usually is.
func (r *runner) withLogTail(err error, logPath string) error {
	if line := lastLine(logPath); line != "" {
		return fmt.Errorf("%w (log %s: %s)", err, logPath, line)
	}
	return err
}

func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 2048
	if info, err := f.Stat(); err == nil && info.Size() > tail {
		_, _ = f.Seek(-tail, io.SeekEnd)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
