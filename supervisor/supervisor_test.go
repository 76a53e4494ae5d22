package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/backoff"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/simengine"
)

// The test binary doubles as the engine: with fakeEngineEnv set it reads
// llama-server's flags and behaves as the variable says.
const fakeEngineEnv = "LLORCH_SUPERVISOR_TEST_ENGINE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEngineEnv); mode != "" {
		os.Exit(fakeEngine(mode, os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// sickFileEnv names a file; while it exists a fake engine's /health answers
// 503.
const sickFileEnv = "LLORCH_SUPERVISOR_TEST_SICK_FILE"

// startsFileEnv names a file that counts the fake engine's starts, one
// byte a start.
const startsFileEnv = "LLORCH_SUPERVISOR_TEST_STARTS_FILE"

// fakeEngine modes: serve (the simulator), crash (exit 3 at once),
// crash-N (crash the first N starts, then serve), loading (503 forever),
// stubborn (serve, ignore SIGTERM). In every serving mode /health answers
// 503 while the file sickFileEnv names exists.
func fakeEngine(mode string, args []string) int {
	if len(args) > 0 && args[0] == "sim-engine" {
		args = args[1:]
	}
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			flags[args[i]] = args[i+1]
			i++
		}
	}
	if n, ok := strings.CutPrefix(mode, "crash-"); ok {
		crashes, err := strconv.Atoi(n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mode", mode, err)
			return 1
		}
		// The supervisor starts one engine at a time: no lock needed.
		starts, _ := os.ReadFile(os.Getenv(startsFileEnv))
		if err := os.WriteFile(os.Getenv(startsFileEnv), append(starts, '.'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "count starts:", err)
			return 1
		}
		mode = "serve"
		if len(starts) < crashes {
			mode = "crash"
		}
	}
	if mode == "crash" {
		fmt.Fprintln(os.Stderr, "error: failed to load model", flags["-m"])
		return 3
	}
	np, err := strconv.Atoi(flags["-np"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "-np:", err)
		return 1
	}
	srv := simengine.New(simengine.Config{Model: flags["-m"], Parallel: np, CtxSize: 4096, Metrics: true, TokensPerSecond: 100})
	h := srv.Handler()
	if mode == "loading" {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	}
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	}
	if sick := os.Getenv(sickFileEnv); sick != "" {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := os.Stat(sick); err == nil && r.URL.Path == "/health" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+flags["--port"])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = http.Serve(ln, h)
	return 0
}

// errorSink keeps each pool's last error, and every error set with the
// breaker's state at the time.
type errorSink struct {
	mu      sync.Mutex
	last    map[string]string
	set     []lastError
	breaker func(pool string) float64 // llorch_engine_breaker_open
}

type lastError struct {
	pool, msg   string
	breakerOpen float64
}

func (e *errorSink) SetLastError(pool, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == nil {
		e.last = map[string]string{}
	}
	e.last[pool] = msg
	e.set = append(e.set, lastError{pool: pool, msg: msg, breakerOpen: e.breaker(pool)})
}

// history returns the errors set for pool, in order.
func (e *errorSink) history(pool string) []lastError {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []lastError
	for _, l := range e.set {
		if l.pool == pool {
			out = append(out, l)
		}
	}
	return out
}

func (e *errorSink) get(pool string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last[pool]
}

type fixture struct {
	sup  *Supervisor
	dir  string
	errs *errorSink
	reg  *prometheus.Registry
}

func newFixture(t *testing.T, mode string, opts Options) *fixture {
	t.Helper()
	t.Setenv(fakeEngineEnv, mode)
	f := &fixture{dir: t.TempDir(), errs: &errorSink{}, reg: prometheus.NewRegistry()}
	t.Setenv(startsFileEnv, filepath.Join(f.dir, "engine-starts"))
	opts.RuntimeDir, opts.Errors, opts.Registerer = f.dir, f.errs, f.reg
	opts.SimBinary = os.Args[0]
	opts.Logger = slog.New(slog.DiscardHandler)
	if opts.Backoff.Base == 0 {
		opts.Backoff = backoff.Backoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}
	}
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = 50 * time.Millisecond
	}
	sup, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.sup = sup
	f.errs.breaker = f.breakerOpen
	t.Cleanup(sup.Shutdown)
	return f
}

func (f *fixture) start(t *testing.T, spec Spec) {
	t.Helper()
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.Start(spec); err != nil {
		t.Fatal(err)
	}
}

// breakerOpen reads the pool's llorch_engine_breaker_open.
func (f *fixture) breakerOpen(pool string) float64 {
	return testutil.ToFloat64(f.sup.metrics.breakerOpen.WithLabelValues(pool))
}

// announced returns the pool's handoff file, if present and valid.
func (f *fixture) announced(pool string) (handoff.Handoff, bool) {
	h, err := handoff.ReadFile(filepath.Join(f.dir, pool+"_r0.json"))
	return h, err == nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func simSpec(pool string) Spec {
	return Spec{PoolID: pool, Engine: EngineSim, Model: "/models/stories260K.gguf", Slots: 2}
}

func TestStartAnnouncesAReadyEngine(t *testing.T) {
	f := newFixture(t, "serve", Options{})
	f.start(t, simSpec("pool-0"))
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "handoff file", func() (ok bool) { h, ok = f.announced("pool-0"); return ok })
	if h.SlotsTotal != 2 || h.Model.ID != "stories260K.gguf" || h.EngineVersion != simengine.BuildInfo || h.Engine != "llamacpp" || !strings.HasPrefix(h.URL, "http://127.0.0.1:") {
		t.Fatalf("handoff = %+v", h)
	}
	if h.PID != f.sup.PIDs()["pool-0"] || !alive(h.PID) {
		t.Fatalf("handoff pid %d, supervisor pid %d", h.PID, f.sup.PIDs()["pool-0"])
	}
	resp, err := http.Get(h.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("engine /health = %d", resp.StatusCode)
	}
	if got := testutil.ToFloat64(f.sup.metrics.up.WithLabelValues("pool-0")); got != 1 {
		t.Fatalf("llorch_engine_up = %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "pool-0_r0.log")); err != nil {
		t.Fatalf("engine log not captured: %v", err)
	}
	f.sup.Shutdown()
	if alive(h.PID) {
		t.Fatalf("engine %d still alive after Shutdown", h.PID)
	}
	if _, ok := f.announced("pool-0"); ok {
		t.Fatal("handoff file left after Shutdown")
	}
}

func TestCrashedEngineIsRestarted(t *testing.T) {
	f := newFixture(t, "serve", Options{Backoff: backoff.Backoff{Base: 200 * time.Millisecond, Max: 400 * time.Millisecond}})
	f.start(t, simSpec("pool-0"))
	var first handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "first engine", func() (ok bool) { first, ok = f.announced("pool-0"); return ok })
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Between the crash and the restart (>= 100 ms of backoff) the pool is
	// not announced.
	clocktest.WaitFor(t, 10*time.Second, "handoff removed after the crash", func() bool { _, ok := f.announced("pool-0"); return !ok })
	if msg := f.errs.get("pool-0"); !strings.Contains(msg, "engine exited: signal: killed") {
		t.Fatalf("last error = %q", msg)
	}
	var second handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "restarted engine", func() (ok bool) { second, ok = f.announced("pool-0"); return ok })
	if second.PID == first.PID || !alive(second.PID) {
		t.Fatalf("restart pid %d (first %d)", second.PID, first.PID)
	}
	if got := testutil.ToFloat64(f.sup.metrics.restarts.WithLabelValues("pool-0")); got != 1 {
		t.Fatalf("restarts = %v, want 1", got)
	}
}

func TestRepeatedCrashesOpenTheBreaker(t *testing.T) {
	f := newFixture(t, "crash", Options{Breaker: Breaker{MaxCrashes: 3, Window: time.Minute, Cooldown: time.Hour}})
	f.start(t, simSpec("pool-0"))
	clocktest.WaitFor(t, 10*time.Second, "breaker open", func() bool {
		return testutil.ToFloat64(f.sup.metrics.breakerOpen.WithLabelValues("pool-0")) == 1
	})
	msg := f.errs.get("pool-0")
	for _, want := range []string{"circuit breaker open after 3 crashes", "exit status 3", "failed to load model /models/stories260K.gguf"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("last error %q lacks %q", msg, want)
		}
	}
	if got := testutil.ToFloat64(f.sup.metrics.restarts.WithLabelValues("pool-0")); got != 3 {
		t.Fatalf("restarts = %v, want 3", got)
	}
	if pids := f.sup.PIDs(); len(pids) != 0 {
		t.Fatalf("engines running with the breaker open: %v", pids)
	}
	if _, ok := f.announced("pool-0"); ok {
		t.Fatal("a crashing engine was announced")
	}
}

// TestBreakerClosesAfterCooldown: two crashes open the breaker; after the
// cooldown the engine starts and stays up: the breaker closes, the engine
// is announced ready, the crashes are forgotten.
func TestBreakerClosesAfterCooldown(t *testing.T) {
	f := newFixture(t, "crash-2", Options{Breaker: Breaker{MaxCrashes: 2, Window: time.Minute, Cooldown: 100 * time.Millisecond}})
	f.start(t, simSpec("pool-0"))
	h := waitRecovered(t, f, "pool-0")
	if got := f.breakerOpen("pool-0"); got != 0 {
		t.Fatalf("llorch_engine_breaker_open = %v with the engine ready, want 0", got)
	}
	if got := testutil.ToFloat64(f.sup.metrics.up.WithLabelValues("pool-0")); got != 1 {
		t.Fatalf("llorch_engine_up = %v with the engine ready, want 1", got)
	}
	if got := testutil.ToFloat64(f.sup.metrics.restarts.WithLabelValues("pool-0")); got != 2 {
		t.Fatalf("restarts = %v, want the 2 crashes", got)
	}
	errs := f.errs.history("pool-0")
	opened := slices.IndexFunc(errs, func(l lastError) bool { return strings.Contains(l.msg, "circuit breaker open after 2 crashes") })
	if opened < 0 || errs[opened].breakerOpen != 1 {
		t.Fatalf("errors %+v: want the breaker reported open after 2 crashes", errs)
	}
	if f.sup.PIDs()["pool-0"] != h.PID || !alive(h.PID) {
		t.Fatalf("engine %d not running with the breaker closed (engines %v)", h.PID, f.sup.PIDs())
	}
	// Closed, it counts crashes afresh: one crash (of 2) restarts the engine
	// with backoff, it does not open the breaker.
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 10*time.Second, "the engine restarted after a crash", func() bool {
		next, ok := f.announced("pool-0")
		return ok && next.PID != h.PID
	})
	if got := f.breakerOpen("pool-0"); got != 0 {
		t.Fatalf("llorch_engine_breaker_open = %v after one crash of a closed breaker, want 0", got)
	}
}

// TestFailedTryAfterCooldownReopensTheBreaker: the one start tried after
// the cooldown crashes: the breaker opens again at once (no restarts with
// backoff), and closes only when a later try's engine is healthy.
func TestFailedTryAfterCooldownReopensTheBreaker(t *testing.T) {
	f := newFixture(t, "crash-3", Options{Breaker: Breaker{MaxCrashes: 2, Window: time.Minute, Cooldown: 100 * time.Millisecond}})
	f.start(t, simSpec("pool-0"))
	waitRecovered(t, f, "pool-0")
	var got []string
	for _, l := range f.errs.history("pool-0") {
		msg, _, _ := strings.Cut(l.msg, ":")
		got = append(got, fmt.Sprintf("%s (breaker %v)", msg, l.breakerOpen))
	}
	want := []string{
		"engine exited before it was ready (breaker 0)",
		"circuit breaker open after 2 crashes in 1m0s, next try in 100ms (breaker 1)",
		"circuit breaker open again (breaker 1)",
		" (breaker 0)", // ready: last error cleared, breaker closed
	}
	if !slices.Equal(got, want) {
		t.Fatalf("last errors:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := testutil.ToFloat64(f.sup.metrics.restarts.WithLabelValues("pool-0")); got != 3 {
		t.Fatalf("restarts = %v, want the 3 crashes", got)
	}
}

// waitRecovered waits until the pool's engine is announced ready and its
// last error cleared, and returns its handoff.
func waitRecovered(t *testing.T, f *fixture, pool string) handoff.Handoff {
	t.Helper()
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, pool+"'s engine ready after the cooldown", func() bool {
		var ok bool
		h, ok = f.announced(pool)
		return ok && f.errs.get(pool) == "" && len(f.errs.history(pool)) > 0
	})
	return h
}

func TestEngineNeverHealthy(t *testing.T) {
	f := newFixture(t, "loading", Options{Breaker: Breaker{MaxCrashes: 1, Window: time.Minute, Cooldown: time.Hour}})
	spec := simSpec("pool-0")
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	spec.SetHealthTimeout(300 * time.Millisecond)
	if err := f.sup.Start(spec); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 10*time.Second, "health timeout", func() bool { return strings.Contains(f.errs.get("pool-0"), "engine not healthy after 300ms") })
	if pids := f.sup.PIDs(); len(pids) != 0 {
		t.Fatalf("an unhealthy engine was left running: %v", pids)
	}
}

func TestStubbornEngineIsKilled(t *testing.T) {
	f := newFixture(t, "stubborn", Options{StopGrace: 200 * time.Millisecond})
	f.start(t, simSpec("pool-0"))
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "engine", func() (ok bool) { h, ok = f.announced("pool-0"); return ok })
	began := time.Now()
	f.sup.Shutdown()
	if alive(h.PID) {
		t.Fatalf("engine %d survived Shutdown", h.PID)
	}
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Fatalf("stopped in %v: SIGKILL came before the grace period", took)
	}
}

func TestDrainWaitsForInFlightRequests(t *testing.T) {
	f := newFixture(t, "serve", Options{})
	f.start(t, simSpec("pool-0"))
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "engine", func() (ok bool) { h, ok = f.announced("pool-0"); return ok })
	// 30 tokens at 100 tokens/s: ~300 ms in flight.
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(h.URL+"/completion", "application/json", strings.NewReader(`{"prompt":"hi","n_predict":30,"stream":true}`))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"stop":true`) {
				done <- nil
				return
			}
		}
		done <- errors.New("stream ended without its final chunk")
	}()
	clocktest.WaitFor(t, 10*time.Second, "request in flight", func() bool {
		resp, err := http.Get(h.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "llamacpp:requests_processing 1" {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.sup.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v, want nil once the request ended", err)
	}
	// Drain returned once the engine had nothing in flight; the client may
	// still be reading the last chunk, so the engine, not the client, says
	// whether it waited.
	m, err := engine.New(h.URL, http.DefaultClient).Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.RequestsProcessing != 0 {
		t.Fatalf("Drain returned with %v requests processing", m.RequestsProcessing)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not end after Drain")
	}
	f.sup.Shutdown()
	if alive(h.PID) {
		t.Fatal("engine alive after Shutdown")
	}
}

func TestDrainDeadline(t *testing.T) {
	f := newFixture(t, "serve", Options{})
	f.start(t, simSpec("pool-0"))
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "engine", func() (ok bool) { h, ok = f.announced("pool-0"); return ok })
	ctx, cancelReq := context.WithCancel(context.Background())
	defer cancelReq()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+"/completion", strings.NewReader(`{"prompt":"hi","n_predict":3000,"stream":true}`))
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // stream until cancelled
			resp.Body.Close()
		}
	}()
	clocktest.WaitFor(t, 10*time.Second, "request in flight", func() bool {
		resp, err := http.Get(h.URL + "/slots")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		return strings.Contains(b.String(), `"is_processing":true`)
	})
	dctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := f.sup.Drain(dctx)
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Drain took %v past its 200ms deadline", took)
	}
	if !errors.Is(err, ErrDrainDeadline) || !strings.Contains(err.Error(), "pool-0") || !strings.Contains(err.Error(), "1 processing") {
		t.Fatalf("Drain = %v, want pool-0's ErrDrainDeadline with 1 request processing", err)
	}
	cancelReq()
}

func TestStartRefusesSimWithoutBinary(t *testing.T) {
	sup, err := New(Options{RuntimeDir: t.TempDir(), Errors: &errorSink{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Shutdown()
	if err := sup.Start(simSpec("p")); err == nil || !strings.Contains(err.Error(), "llorch binary") {
		t.Fatalf("err = %v", err)
	}
}

// TestLastErrorClearsOnRecovery: a crash and a failing health probe set the
// pool's last error; the engine ready again clears it.
func TestLastErrorClearsOnRecovery(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	t.Setenv(sickFileEnv, sick)
	f := newFixture(t, "serve", Options{Backoff: backoff.Backoff{Base: 50 * time.Millisecond, Max: 100 * time.Millisecond}, ProbeFailures: 2})
	f.start(t, simSpec("pool-0"))
	var first handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "first engine", func() (ok bool) { first, ok = f.announced("pool-0"); return ok })
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 10*time.Second, "last error after the crash", func() bool { return strings.Contains(f.errs.get("pool-0"), "signal: killed") })
	clocktest.WaitFor(t, 10*time.Second, "restarted engine", func() bool { h, ok := f.announced("pool-0"); return ok && h.PID != first.PID })
	if msg := f.errs.get("pool-0"); msg != "" {
		t.Fatalf("last error %q after the engine recovered, want none", msg)
	}

	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 10*time.Second, "probe failure", func() bool { return strings.Contains(f.errs.get("pool-0"), "health probe failing") })
	if _, ok := f.announced("pool-0"); ok {
		t.Fatal("a failing engine is still announced")
	}
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 10*time.Second, "announced again", func() bool { _, ok := f.announced("pool-0"); return ok })
	clocktest.WaitFor(t, 10*time.Second, "last error cleared", func() bool { return f.errs.get("pool-0") == "" })
}

// TestStopOnePool: Stop stops one pool's engine for good (no restart, no
// handoff file); the other pools' engines keep running.
func TestStopOnePool(t *testing.T) {
	f := newFixture(t, "serve", Options{Backoff: backoff.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
	f.start(t, simSpec("pool-a"))
	f.start(t, simSpec("pool-b"))
	var a, b handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, "both engines", func() bool {
		var okA, okB bool
		a, okA = f.announced("pool-a")
		b, okB = f.announced("pool-b")
		return okA && okB
	})
	if !f.sup.Runs("pool-a") || f.sup.Runs("pool-c") {
		t.Fatal("Runs does not tell the supervised pools")
	}
	f.sup.Stop("pool-a")
	if alive(a.PID) {
		t.Fatalf("pool-a's engine %d alive after Stop", a.PID)
	}
	if _, ok := f.announced("pool-a"); ok {
		t.Fatal("pool-a's handoff file left after Stop")
	}
	// No restart can come: Stop returned after pool-a's runner, the only
	// goroutine that starts its engine, ended.
	for _, r := range f.sup.runnersOf("pool-a") {
		select {
		case <-r.done:
		default:
			t.Fatal("pool-a's runner still running after Stop: it could restart the engine")
		}
	}
	if pids := f.sup.PIDs(); pids["pool-a"] != 0 || pids["pool-b"] != b.PID || !alive(b.PID) {
		t.Fatalf("after stopping pool-a: engines %v, want only pool-b's %d", pids, b.PID)
	}
	if got := testutil.ToFloat64(f.sup.metrics.restarts.WithLabelValues("pool-a")); got != 0 {
		t.Fatalf("a stopped engine counted %v restarts", got)
	}
	f.sup.Stop("pool-a") // again: nothing to do
	f.sup.Shutdown()
	if alive(b.PID) {
		t.Fatal("pool-b's engine alive after Shutdown")
	}
}
