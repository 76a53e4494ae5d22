package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/simengine"
	"github.com/llorch/llorch/supervisor"
)

// The test binary doubles as the engine the daemon launches: with
// fakeEngineEnv set it reads llama-server's flags and serves the simulator
// at testTokensPerSecond; SIGTERM kills it at once, cutting its streams, as
// it does llama-server.
const (
	fakeEngineEnv       = "LLORCH_AGENT_TEST_ENGINE"
	testTokensPerSecond = 100
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeEngineEnv) != "" {
		os.Exit(fakeEngine(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeEngine(args []string) int {
	flags := map[string]string{}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "-") && !strings.HasPrefix(args[i+1], "-") {
			flags[args[i]] = args[i+1]
			i++
		}
	}
	np, _ := strconv.Atoi(flags["-np"])
	srv := simengine.New(simengine.Config{Model: flags["-m"], Parallel: max(np, 1), CtxSize: 4096, Metrics: true, TokensPerSecond: testTokensPerSecond})
	ln, err := net.Listen("tcp", "127.0.0.1:"+flags["--port"])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = http.Serve(ln, srv.Handler())
	return 0
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// cpEvent is one call the fake control plane received.
type cpEvent struct {
	at       time.Time
	kind     string // register, heartbeat, deregister
	draining bool
}

// fakeCP is a control plane over HTTP that records the node routes' calls;
// failDraining answers a draining heartbeat 500, failDelete a DELETE 503.
type fakeCP struct {
	*httptest.Server
	failDraining, failDelete bool

	mu sync.Mutex
	// onDelete, if set, runs when the DELETE arrives.
	onDelete func()
	events   []cpEvent
}

func newFakeCP(t *testing.T) *fakeCP {
	t.Helper()
	cp := &fakeCP{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/nodes/register", func(w http.ResponseWriter, r *http.Request) {
		cp.record(cpEvent{kind: "register"})
		api.WriteJSON(w, http.StatusOK, map[string]any{"success": true})
	})
	mux.HandleFunc("POST /v2/nodes/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		var hb api.HeartbeatRequest
		_ = json.NewDecoder(r.Body).Decode(&hb)
		cp.record(cpEvent{kind: "heartbeat", draining: hb.Draining})
		if hb.Draining && cp.failDraining {
			api.WriteError(w, http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: "boom"})
			return
		}
		api.WriteJSON(w, http.StatusOK, api.HeartbeatResponse{Success: true, NextHeartbeatMS: 10000})
	})
	mux.HandleFunc("DELETE /v2/nodes/{id}", func(w http.ResponseWriter, r *http.Request) {
		cp.record(cpEvent{kind: "deregister"})
		cp.mu.Lock()
		onDelete := cp.onDelete
		cp.mu.Unlock()
		if onDelete != nil {
			onDelete()
		}
		if cp.failDelete {
			api.WriteError(w, http.StatusServiceUnavailable, api.Error{Code: api.CodeInternal, Message: "unavailable"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	cp.Server = httptest.NewServer(mux)
	t.Cleanup(cp.Close)
	return cp
}

func (cp *fakeCP) record(e cpEvent) {
	e.at = time.Now()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.events = append(cp.events, e)
}

func (cp *fakeCP) snapshot() []cpEvent {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]cpEvent(nil), cp.events...)
}

// running is a Daemon serving on a loopback port.
type running struct {
	base, dir string
	cancel    context.CancelFunc
	done      chan error
}

// testConfig launches one simulated engine (the test binary) per pool.
func testConfig(t *testing.T, pools ...string) agent.Config {
	t.Helper()
	t.Setenv(fakeEngineEnv, "1")
	cfg := agent.Config{
		RuntimeDir:         t.TempDir(),
		SimBinary:          os.Args[0],
		Registration:       api.RegisterRequest{NodeID: "node-t", Address: "http://127.0.0.1:1"},
		GPU:                agent.GPUConfig{Source: agent.GPUNone},
		EnginePollInterval: 100 * time.Millisecond,
		HeartbeatInterval:  10 * time.Second,
		Logger:             slog.New(slog.DiscardHandler),
	}
	for _, p := range pools {
		spec := supervisor.Spec{PoolID: p, Engine: supervisor.EngineSim, Slots: 2}
		if err := spec.Normalize(); err != nil {
			t.Fatal(err)
		}
		cfg.Engines = append(cfg.Engines, spec)
	}
	return cfg
}

// startDaemon runs cfg until the test stops it (or its cleanup does).
func startDaemon(t *testing.T, cfg agent.Config) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	d, err := agent.NewDaemon(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("NewDaemon: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{base: "http://" + ln.Addr().String(), dir: cfg.RuntimeDir, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Logf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the daemon did not stop")
		}
	})
	return r
}

// stop cancels Run's context and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

func (r *running) status(t *testing.T, pool string) api.PoolStatus {
	t.Helper()
	resp, err := http.Get(r.base + "/pools/" + pool + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st api.PoolStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// engine waits for the pool's engine to be announced and returns its
// handoff file.
func (r *running) engine(t *testing.T, pool string) handoff.Handoff {
	t.Helper()
	var h handoff.Handoff
	clocktest.WaitFor(t, 10*time.Second, pool+"'s engine ready", func() bool {
		var err error
		h, err = handoff.ReadFile(filepath.Join(r.dir, pool+"_r0.json"))
		return err == nil && r.status(t, pool).Ready
	})
	return h
}

// stream is one streamed /completion; done receives whether it ended with
// its final chunk (false: cut), and when.
type stream struct {
	done  chan bool
	ended time.Time
}

func startStream(t *testing.T, url string, tokens int) *stream {
	t.Helper()
	s := &stream{done: make(chan bool, 1)}
	body := fmt.Sprintf(`{"prompt":"once upon a time","n_predict":%d,"stream":true}`, tokens)
	go func() {
		complete := false
		defer func() {
			s.ended = time.Now()
			s.done <- complete
		}()
		resp, err := http.Post(url+"/completion", "application/json", strings.NewReader(body))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"stop":true`) {
				complete = true
			}
		}
	}()
	return s
}

func (s *stream) wait(t *testing.T) bool {
	t.Helper()
	select {
	case ok := <-s.done:
		return ok
	case <-time.After(30 * time.Second):
		t.Fatal("stream never ended")
		return false
	}
}

// processing returns the engine's llamacpp:requests_processing, -1 if it
// does not answer.
func processing(url string) int {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "llamacpp:requests_processing "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

// waitProcessing waits until the engine at url processes n requests.
func waitProcessing(t *testing.T, url string, n int) {
	t.Helper()
	clocktest.WaitFor(t, 5*time.Second, fmt.Sprintf("%d requests processing", n), func() bool { return processing(url) == n })
}

// TestDaemonShutdownSequence: SIGTERM's sequence, in process: requests in
// flight finish; the control plane gets a draining heartbeat, then, after
// the requests, the DELETE; the engine is stopped and its handoff file
// gone; Run returns nil (exit 0).
func TestDaemonShutdownSequence(t *testing.T) {
	cp := newFakeCP(t)
	cfg := testConfig(t, "pool-0")
	cfg.Cloud, cfg.ControlPlaneURL = true, cp.URL
	r := startDaemon(t, cfg)
	h := r.engine(t, "pool-0")
	clocktest.WaitFor(t, 5*time.Second, "two registrations", func() bool { return len(cp.snapshot()) >= 2 })
	inFlightAtDelete := make(chan int, 1)
	cp.mu.Lock()
	cp.onDelete = func() { inFlightAtDelete <- processing(h.URL) }
	cp.mu.Unlock()

	// 100 tokens at 100 tokens/s: about a second each.
	a, b := startStream(t, h.URL, 100), startStream(t, h.URL, 100)
	waitProcessing(t, h.URL, 2)
	stopped := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after a clean shutdown", err)
	}
	if !a.wait(t) || !b.wait(t) {
		t.Fatal("a request in flight was cut: shutdown did not wait for it")
	}
	var finalHB, deregister time.Time
	for _, e := range cp.snapshot() {
		switch {
		case e.kind == "heartbeat" && e.draining:
			finalHB = e.at
		case e.kind == "deregister":
			deregister = e.at
		}
	}
	if finalHB.IsZero() || deregister.IsZero() || finalHB.After(deregister) || finalHB.Before(stopped) {
		t.Fatalf("control plane calls %+v: want a draining heartbeat after the stop, then the DELETE", cp.snapshot())
	}
	if n := <-inFlightAtDelete; n != 0 {
		t.Errorf("the engine processed %d requests when the DELETE came, want 0: deregistration waits for them", n)
	}
	if alive(h.PID) {
		t.Errorf("engine %d alive after Run returned", h.PID)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "pool-0_r0.json")); !os.IsNotExist(err) {
		t.Errorf("handoff file left behind: %v", err)
	}
}

// TestDaemonShutdownDrainTimeout: a request still running at DrainTimeout
// is cut when the engine stops; that is the bound chosen, not a failure:
// Run returns nil.
func TestDaemonShutdownDrainTimeout(t *testing.T) {
	cfg := testConfig(t, "pool-0")
	cfg.DrainTimeout = 300 * time.Millisecond
	r := startDaemon(t, cfg)
	h := r.engine(t, "pool-0")
	long := startStream(t, h.URL, 3000)
	waitProcessing(t, h.URL, 1)
	stopped := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if long.wait(t) {
		t.Error("the request past the drain timeout completed: the engine was not stopped")
	}
	if took := long.ended.Sub(stopped); took < 300*time.Millisecond {
		t.Errorf("request cut %v after the stop, before the 300ms drain timeout", took)
	}
	if alive(h.PID) {
		t.Errorf("engine %d alive after Run returned", h.PID)
	}
}

// TestDaemonShutdownReturnsEachFailedStep: a failing final heartbeat and a
// failing DELETE are each returned, joined, naming their step; the
// sequence still runs to its end (the DELETE is sent after the failed
// heartbeat, the engine stopped).
func TestDaemonShutdownReturnsEachFailedStep(t *testing.T) {
	cp := newFakeCP(t)
	cp.failDraining, cp.failDelete = true, true
	cfg := testConfig(t, "pool-0")
	cfg.Cloud, cfg.ControlPlaneURL = true, cp.URL
	r := startDaemon(t, cfg)
	h := r.engine(t, "pool-0")
	clocktest.WaitFor(t, 5*time.Second, "two registrations", func() bool { return len(cp.snapshot()) >= 2 })

	err := r.stop(t)
	if err == nil {
		t.Fatal("Run = nil, want the failed steps")
	}
	for _, want := range []string{"final draining heartbeat", "deregistration", "--shutdown-timeout", "500", "503"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run = %q, want it to name %q", err, want)
		}
	}
	if got := cp.snapshot(); got[len(got)-1].kind != "deregister" {
		t.Errorf("last control plane call %+v, want the DELETE despite the failed heartbeat", got[len(got)-1])
	}
	if alive(h.PID) {
		t.Errorf("engine %d alive after Run returned", h.PID)
	}
}

// TestDrainPoolDeadline: POST /pools/{id}/drain takes the pool out of
// service at once; at deadline_ms its engine is stopped, cutting the
// request still running, and the pool says stopped. An idle pool's engine
// stops at once; a pool whose engine the agent did not start stays
// draining; other pools keep serving.
func TestDrainPoolDeadline(t *testing.T) {
	cfg := testConfig(t, "busy", "idle", "other")
	cfg.Pools = []string{"external"}
	r := startDaemon(t, cfg)
	busy, idle, other := r.engine(t, "busy"), r.engine(t, "idle"), r.engine(t, "other")
	if _, err := handoff.WriteFile(r.dir, handoff.Handoff{PoolID: "external", ReplicaID: "r0", EngineVersion: "b1", URL: "http://127.0.0.1:9", SlotsTotal: 1}); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 5*time.Second, "the external pool to be ready", func() bool { return r.status(t, "external").Ready })

	long := startStream(t, busy.URL, 3000)
	waitProcessing(t, busy.URL, 1)
	drain := func(pool, body string) api.PoolStatus {
		t.Helper()
		resp, err := http.Post(r.base+"/pools/"+pool+"/drain", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st api.PoolStatus
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("drain %s: %d, %v", pool, resp.StatusCode, err)
		}
		return st
	}
	// Someone else's engine: the pool drains, its engine is not ours to
	// stop. DrainPool decides that at once: only a pool whose engines the
	// agent started gets a goroutine that stops them. Drained first and
	// checked last, after the busy and idle pools' drains have run to
	// their end, the pool would have been stopped by then if it had one;
	// no sleep of its own is needed.
	if st := drain("external", ""); !st.Draining || st.Stopped || !st.Ready {
		t.Fatalf("external pool's drain answered %+v, want draining and still announced", st)
	}

	began := time.Now()
	if st := drain("busy", `{"deadline_ms":500}`); !st.Draining || st.Stopped || !st.Ready {
		t.Fatalf("drain answered %+v, want draining, not stopped yet", st)
	}
	if long.wait(t) {
		t.Fatal("the request running at the deadline completed: want it cut")
	}
	if cut := long.ended.Sub(began); cut < 500*time.Millisecond {
		t.Errorf("request cut %v after the drain, before its 500ms deadline", cut)
	}
	clocktest.WaitFor(t, 5*time.Second, "busy to stop", func() bool { st := r.status(t, "busy"); return st.Stopped && st.Draining && !st.Live })
	if alive(busy.PID) {
		t.Errorf("busy's engine %d alive after its drain deadline", busy.PID)
	}

	// Idle: stopped as soon as it is drained, long before its deadline.
	drain("idle", `{"deadline_ms":60000}`)
	clocktest.WaitFor(t, 5*time.Second, "idle to stop", func() bool { return r.status(t, "idle").Stopped })
	if alive(idle.PID) {
		t.Errorf("idle's engine %d alive after its drain", idle.PID)
	}

	if st := r.status(t, "external"); !st.Draining || st.Stopped || !st.Ready {
		t.Errorf("external pool after its drain: %+v, want draining and still announced", st)
	}

	if st := r.status(t, "other"); !st.Ready || st.Draining || !alive(other.PID) {
		t.Errorf("other pool %+v (engine alive: %v): draining one pool touched another", st, alive(other.PID))
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if alive(other.PID) {
		t.Error("other's engine alive after shutdown")
	}
}

// TestNewDaemonNVMLWithoutDriver: --gpu-source nvml on a machine where NVML
// cannot start (no driver, or a build without cgo) fails in NewDaemon,
// before anything listens, saying what to do.
func TestNewDaemonNVMLWithoutDriver(t *testing.T) {
	if src, err := exporter.OpenNVML(); err == nil {
		_ = src.Close()
		t.Skip("NVML works here: this test needs a machine without the NVIDIA driver")
	}
	cfg := testConfig(t)
	cfg.Addr = "127.0.0.1:0"
	cfg.GPU.Source = agent.GPUNVML
	_, err := agent.NewDaemon(cfg)
	if err == nil {
		t.Fatal("NewDaemon succeeded without NVML")
	}
	for _, want := range []string{"--gpu-source/POOL_MANAGERD_GPU_SOURCE nvml", "nvml", "NVIDIA driver"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestNewDaemonValidates(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*agent.Config)
		want string
	}{
		{"bad node id", func(c *agent.Config) { c.Registration.NodeID = "a b" }, "--node-id/POOL_MANAGERD_NODE_ID"},
		{"bad pool id", func(c *agent.Config) { c.Pools = []string{"a/b"} }, "--pools/POOL_MANAGERD_POOLS"},
		{"cloud without address", func(c *agent.Config) { c.Cloud, c.Registration.Address = true, "" }, "--address/POOL_MANAGERD_ADDRESS is required"},
		{"cloud without control plane", func(c *agent.Config) { c.Cloud = true }, "--orchestratord-url/ORCHESTRATORD_URL is required"},
		{"dcgm without url", func(c *agent.Config) { c.GPU.Source = agent.GPUDCGM }, "--dcgm-exporter-url"},
		{"sim without gpus", func(c *agent.Config) { c.GPU.Source = agent.GPUSim }, "--sim-gpus"},
		{"unknown gpu source", func(c *agent.Config) { c.GPU.Source = "cuda" }, "want auto, nvml, dcgm, sim or none"},
		{"breaker", func(c *agent.Config) { c.Breaker = supervisor.Breaker{MaxCrashes: 0, Window: time.Minute} }, "--engine-max-crashes"},
		{"exposed without token", func(c *agent.Config) { c.Addr = "0.0.0.0:9200" }, "no API token"},
		{"missing engine", func(c *agent.Config) {
			c.Engines = []supervisor.Spec{{PoolID: "p", Engine: "/nonexistent/llama-server", Model: "m.gguf"}}
		}, `pool p: engine "/nonexistent/llama-server"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Addr = "127.0.0.1:0"
			tt.edit(&cfg)
			if _, err := agent.NewDaemon(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewDaemon = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}
