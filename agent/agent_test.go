package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/backoff"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

const nodeID = "gpu-node-1"

// call is one request the fake control plane received.
type call struct {
	kind   string // register, heartbeat, deregister
	at     time.Time
	nodeID string
	reg    api.RegisterRequest
	hb     api.HeartbeatRequest
}

type hbAnswer struct {
	resp api.HeartbeatResponse
	err  error
}

// fakeControlPlane records every call and answers from programmable queues;
// once a queue is empty they answer the defaults.
type fakeControlPlane struct {
	mu            sync.Mutex
	calls         []call
	registerErrs  []error
	registerErr   error // answered once registerErrs is empty
	heartbeats    []hbAnswer
	defaultHB     api.HeartbeatResponse
	deregisterErr error
	// hbDelay is how long a heartbeat takes to answer, unless its context
	// ends first.
	hbDelay time.Duration
	// notify gets a value (never blocking) after each recorded call.
	notify chan struct{}
}

var _ agent.ControlPlane = (*fakeControlPlane)(nil)

func newFake() *fakeControlPlane {
	return &fakeControlPlane{notify: make(chan struct{}, 1)}
}

func (f *fakeControlPlane) record(c call) {
	c.at = time.Now()
	f.calls = append(f.calls, c)
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *fakeControlPlane) Register(_ context.Context, req api.RegisterRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{kind: "register", nodeID: req.NodeID, reg: req})
	if len(f.registerErrs) > 0 {
		err := f.registerErrs[0]
		f.registerErrs = f.registerErrs[1:]
		return err
	}
	return f.registerErr
}

func (f *fakeControlPlane) Heartbeat(ctx context.Context, id string, hb api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	f.mu.Lock()
	delay := f.hbDelay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return api.HeartbeatResponse{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{kind: "heartbeat", nodeID: id, hb: hb})
	if len(f.heartbeats) > 0 {
		a := f.heartbeats[0]
		f.heartbeats = f.heartbeats[1:]
		return a.resp, a.err
	}
	return f.defaultHB, nil
}

func (f *fakeControlPlane) Deregister(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{kind: "deregister", nodeID: id})
	return f.deregisterErr
}

// snapshot returns a copy of the calls so far.
func (f *fakeControlPlane) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func kinds(calls []call) string {
	ks := make([]string, len(calls))
	for i, c := range calls {
		ks[i] = c.kind
	}
	return strings.Join(ks, ",")
}

func count(calls []call, kind string) int {
	n := 0
	for _, c := range calls {
		if c.kind == kind {
			n++
		}
	}
	return n
}

// waitCalls waits up to 5s for cond to hold on the recorded calls and returns
// them; it fails the test if it never does.
func (f *fakeControlPlane) waitCalls(t *testing.T, what string, cond func([]call) bool) []call {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		calls := f.snapshot()
		if cond(calls) {
			return calls
		}
		select {
		case <-f.notify:
		case <-poll.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; calls: %s", what, kinds(f.snapshot()))
		}
	}
}

// errNotFound is what api.Client returns for a 404.
var errNotFound = fmt.Errorf("POST /v2/nodes/%s/heartbeat: %w (404 Not Found: NOT_FOUND: unknown node)", nodeID, api.ErrNotFound)

type harness struct {
	cp     *fakeControlPlane
	pools  *pool.Table
	reg    *prometheus.Registry
	agent  *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, cp *fakeControlPlane, interval time.Duration) *harness {
	t.Helper()
	return newHarnessWith(t, cp, interval, nil)
}

// newHarnessWith lets edit change the agent's options.
func newHarnessWith(t *testing.T, cp *fakeControlPlane, interval time.Duration, edit func(*agent.Options)) *harness {
	t.Helper()
	h := &harness{cp: cp, pools: pool.NewTable([]string{"pool-0", "pool-1"}), reg: prometheus.NewRegistry()}
	opts := agent.Options{
		Registration: api.RegisterRequest{
			NodeID:    nodeID,
			MachineID: "machine-1",
			Address:   "http://10.0.0.7:9200",
			Version:   "test",
		},
		ControlPlane:      cp,
		Pools:             h.pools,
		HeartbeatInterval: interval,
		Backoff:           backoff.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond},
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        h.reg,
	}
	if edit != nil {
		edit(&opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	h.agent = a
	return h
}

// start runs the agent; the test's cleanup stops it and checks that no
// goroutine is left behind.
func (h *harness) start(t *testing.T) {
	t.Helper()
	// Goroutines already running (the test's own, a synctest bubble's)
	// are not the agent's: only those started from here on must end.
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		h.agent.Run(ctx)
	}()
	t.Cleanup(func() {
		h.stop(t)
		goleak.VerifyNone(t, before)
	})
}

// stop cancels Run and waits for it to return.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func (h *harness) compareMetrics(t *testing.T, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestRegistrationRetriedThenHeartbeats(t *testing.T) {
	cp := newFake()
	boom := errors.New("dial tcp 10.0.0.1:8080: connect: connection refused")
	cp.registerErrs = []error{boom, boom, boom}
	const interval = 20 * time.Millisecond
	h := newHarness(t, cp, interval)
	h.start(t)

	calls := cp.waitCalls(t, "4 registrations and 3 heartbeats", func(c []call) bool {
		return count(c, "heartbeat") >= 3
	})
	if got, want := kinds(calls[:7]), "register,register,register,register,heartbeat,heartbeat,heartbeat"; got != want {
		t.Fatalf("calls = %s, want %s...", got, want)
	}
	reg := calls[0].reg
	if reg.NodeID != nodeID || reg.MachineID != "machine-1" || reg.Address != "http://10.0.0.7:9200" || reg.Version != "test" {
		t.Errorf("registration = %+v", reg)
	}
	if got := strings.Join(reg.Pools, ","); got != "pool-0,pool-1" {
		t.Errorf("registered pools = %s, want the table's ids pool-0,pool-1", got)
	}
	// Backoff is 1ms, 2ms, 4ms before jitter: retries are spaced by at
	// least half of that, never a hot loop.
	for i, minGap := range []time.Duration{500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond} {
		if gap := calls[i+1].at.Sub(calls[i].at); gap < minGap {
			t.Errorf("registration retry %d came %v after the failure, want >= %v", i+1, gap, minGap)
		}
	}
	// Heartbeats come at the interval, never sooner.
	for i := 5; i < 7; i++ {
		if gap := calls[i].at.Sub(calls[i-1].at); gap < interval {
			t.Errorf("heartbeat %d came %v after the previous one, want >= %v", i-4, gap, interval)
		}
	}
	for _, c := range calls[4:7] {
		if c.nodeID != nodeID {
			t.Errorf("heartbeat for node %q, want %q", c.nodeID, nodeID)
		}
		if c.hb.Draining {
			t.Error("a running agent's heartbeat is marked draining")
		}
		if c.hb.Timestamp.IsZero() {
			t.Error("heartbeat without timestamp")
		}
	}
	h.stop(t)
	h.compareMetrics(t, `
# HELP llorch_agent_registered 1 while the control plane holds this node's registration.
# TYPE llorch_agent_registered gauge
llorch_agent_registered 1
# HELP llorch_agent_registrations_total Registration attempts with the control plane, by outcome (ok, error).
# TYPE llorch_agent_registrations_total counter
llorch_agent_registrations_total{outcome="error"} 3
llorch_agent_registrations_total{outcome="ok"} 1
`, "llorch_agent_registered", "llorch_agent_registrations_total")
}

func TestHeartbeat404ReRegistersAtOnce(t *testing.T) {
	cp := newFake()
	cp.heartbeats = []hbAnswer{{err: errNotFound}}
	// With a 10s interval, anything after the first heartbeat that arrives
	// within the 5s wait must have been triggered by the 404.
	h := newHarness(t, cp, 10*time.Second)
	h.start(t)

	calls := cp.waitCalls(t, "re-registration after a 404", func(c []call) bool { return len(c) >= 4 })
	if got, want := kinds(calls), "register,heartbeat,register,heartbeat"; got != want {
		t.Fatalf("calls = %s, want %s", got, want)
	}
	h.stop(t)
	h.compareMetrics(t, `
# HELP llorch_agent_registered 1 while the control plane holds this node's registration.
# TYPE llorch_agent_registered gauge
llorch_agent_registered 1
# HELP llorch_heartbeat_sent_total Heartbeats sent to the control plane, by outcome (ok, error, unknown_node).
# TYPE llorch_heartbeat_sent_total counter
llorch_heartbeat_sent_total{outcome="error"} 0
llorch_heartbeat_sent_total{outcome="ok"} 1
llorch_heartbeat_sent_total{outcome="unknown_node"} 1
# HELP llorch_agent_registrations_total Registration attempts with the control plane, by outcome (ok, error).
# TYPE llorch_agent_registrations_total counter
llorch_agent_registrations_total{outcome="error"} 0
llorch_agent_registrations_total{outcome="ok"} 2
`, "llorch_agent_registered", "llorch_heartbeat_sent_total", "llorch_agent_registrations_total")
}

func TestHeartbeatErrorKeepsRegistration(t *testing.T) {
	cp := newFake()
	cp.heartbeats = []hbAnswer{{err: errors.New("POST /v2/nodes/x/heartbeat: 500 Internal Server Error")}}
	h := newHarness(t, cp, 20*time.Millisecond)
	h.start(t)

	calls := cp.waitCalls(t, "heartbeats after a failed one", func(c []call) bool { return count(c, "heartbeat") >= 3 })
	if got, want := kinds(calls[:4]), "register,heartbeat,heartbeat,heartbeat"; got != want {
		t.Fatalf("calls = %s, want %s: a 500 must not trigger re-registration", got, want)
	}
	h.stop(t)
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP llorch_agent_registered 1 while the control plane holds this node's registration.
# TYPE llorch_agent_registered gauge
llorch_agent_registered 1
`), "llorch_agent_registered"); err != nil {
		t.Error(err)
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "llorch_heartbeat_sent_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	final := count(h.cp.snapshot(), "heartbeat")
	if got["error"] != 1 || got["unknown_node"] != 0 || got["ok"] != float64(final-1) {
		t.Errorf("llorch_heartbeat_sent_total = %v, want error=1 unknown_node=0 ok=%d", got, final-1)
	}
}

func TestNextHeartbeatShortensInterval(t *testing.T) {
	tests := []struct {
		name       string
		interval   time.Duration
		nextMS     int64
		wantMinGap time.Duration
	}{
		// 4 heartbeats within the 5s wait are only possible if the 10s
		// interval was shortened to the 20ms the control plane asked for.
		{"shorter next_heartbeat_ms wins", 10 * time.Second, 20, 20 * time.Millisecond},
		// A longer request never stretches the configured interval.
		{"longer next_heartbeat_ms ignored", 20 * time.Millisecond, 60_000, 20 * time.Millisecond},
		{"zero next_heartbeat_ms ignored", 20 * time.Millisecond, 0, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newFake()
			cp.defaultHB = api.HeartbeatResponse{Success: true, NextHeartbeatMS: tt.nextMS}
			h := newHarness(t, cp, tt.interval)
			h.start(t)
			calls := cp.waitCalls(t, "4 heartbeats", func(c []call) bool { return count(c, "heartbeat") >= 4 })
			if got := count(calls, "register"); got != 1 {
				t.Errorf("%d registrations, want 1", got)
			}
			// The first heartbeat follows registration at once; later
			// ones are spaced by the (possibly shortened) interval.
			for i := 2; i < 5; i++ {
				if gap := calls[i].at.Sub(calls[i-1].at); gap < tt.wantMinGap {
					t.Errorf("heartbeat gap %v, want >= %v", gap, tt.wantMinGap)
				}
			}
		})
	}
}

func TestPoolChangeTriggersHeartbeat(t *testing.T) {
	cp := newFake()
	h := newHarness(t, cp, 10*time.Second)
	h.start(t)
	calls := cp.waitCalls(t, "first heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
	first := calls[len(calls)-1].hb
	if len(first.Pools) != 2 || first.Pools[0].Ready || first.Pools[1].Ready {
		t.Fatalf("first heartbeat pools = %+v, want pool-0 and pool-1 not ready", first.Pools)
	}

	h.pools.Upsert("/rt/pool-0_r0.json", handoff.Handoff{
		PoolID: "pool-0", Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081",
		SlotsTotal: 4, SlotsFree: 4, Model: handoff.Model{ID: "qwen2.5-0.5b"},
	})
	calls = cp.waitCalls(t, "heartbeat after the pool change", func(c []call) bool { return count(c, "heartbeat") >= 2 })
	if got, want := kinds(calls), "register,heartbeat,heartbeat"; got != want {
		t.Fatalf("calls = %s, want %s", got, want)
	}
	hb := calls[2].hb
	want := api.PoolState{
		PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 4, Engine: "llamacpp",
		EngineVersion: "b4747", URL: "http://127.0.0.1:8081", Models: []string{"qwen2.5-0.5b"},
		Replicas: []api.ReplicaState{{ReplicaID: "r0", URL: "http://127.0.0.1:8081", Ready: true, SlotsTotal: 4, SlotsFree: 4, EngineVersion: "b4747"}},
	}
	if len(hb.Pools) != 2 || !reflect.DeepEqual(hb.Pools[0], want) || hb.Pools[1].PoolID != "pool-1" || hb.Pools[1].Ready {
		t.Errorf("heartbeat pools = %+v, want [%+v, pool-1 not ready]", hb.Pools, want)
	}
	if hb.GPUs == nil {
		t.Error("heartbeat gpus is null, want a list")
	}
}

// TestHeartbeatCarriesEngineLoad: a heartbeat reports each pool's engine
// poll — free slots, deferred requests and when they were observed, in the
// same clock as the heartbeat's timestamp — and nothing of the kind for a
// pool whose engine was not polled, on the wire too.
func TestHeartbeatCarriesEngineLoad(t *testing.T) {
	cp := newFake()
	h := newHarness(t, cp, 20*time.Millisecond)
	h.pools.Upsert("/rt/pool-0_r0.json", handoff.Handoff{
		PoolID: "pool-0", Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081",
		SlotsTotal: 4, SlotsFree: 4, Model: handoff.Model{ID: "m"},
	})
	h.pools.Upsert("/rt/pool-1_r0.json", handoff.Handoff{
		PoolID: "pool-1", Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8082",
		SlotsTotal: 2, SlotsFree: 2, Model: handoff.Model{ID: "m"},
	})
	polled := time.Now()
	h.pools.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: polled})
	h.start(t)
	calls := cp.waitCalls(t, "a heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
	var hb api.HeartbeatRequest
	for _, c := range calls {
		if c.kind == "heartbeat" {
			hb = c.hb
			break
		}
	}
	if len(hb.Pools) != 2 {
		t.Fatalf("heartbeat pools = %+v", hb.Pools)
	}
	if p := hb.Pools[0]; p.SlotsFree != 1 || p.RequestsDeferred != 2 || !p.SlotsObservedAt.Equal(polled) {
		t.Errorf("pool-0 = %+v, want 1 free, 2 deferred, observed at %v", p, polled)
	}
	if hb.Timestamp.Before(hb.Pools[0].SlotsObservedAt) {
		t.Errorf("heartbeat timestamp %v before the poll it reports %v", hb.Timestamp, hb.Pools[0].SlotsObservedAt)
	}
	if p := hb.Pools[1]; p.SlotsFree != 2 || p.RequestsDeferred != 0 || !p.SlotsObservedAt.IsZero() {
		t.Errorf("pool-1 = %+v, want the handoff's 2 free, undated", p)
	}

	body, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct {
		Pools []map[string]any `json:"pools"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		t.Fatal(err)
	}
	if got := wire.Pools[0]["requests_deferred"]; got != 2.0 {
		t.Errorf("pool-0 requests_deferred on the wire = %v", got)
	}
	if got, _ := wire.Pools[0]["slots_observed_at"].(string); got != polled.Format(time.RFC3339Nano) {
		t.Errorf("pool-0 slots_observed_at on the wire = %q, want %q", got, polled.Format(time.RFC3339Nano))
	}
	for _, k := range []string{"requests_deferred", "slots_observed_at"} {
		if v, ok := wire.Pools[1][k]; ok {
			t.Errorf("pool-1 sends %s %v for an engine not polled", k, v)
		}
	}
	// Each pool lists its replica, with the same poll.
	reps, _ := wire.Pools[0]["replicas"].([]any)
	if len(reps) != 1 {
		t.Fatalf("pool-0 replicas on the wire = %v", wire.Pools[0]["replicas"])
	}
	r0, _ := reps[0].(map[string]any)
	if r0["replica_id"] != "r0" || r0["url"] != "http://127.0.0.1:8081" || r0["ready"] != true || r0["slots_total"] != 4.0 ||
		r0["slots_free"] != 1.0 || r0["requests_deferred"] != 2.0 || r0["engine_version"] != "b4747" ||
		r0["slots_observed_at"] != polled.Format(time.RFC3339Nano) {
		t.Errorf("pool-0 replica r0 on the wire = %v", r0)
	}
}

// TestHeartbeatCarriesReplicas: a pool with two replicas heartbeats as one
// pool whose fields aggregate them, and lists each replica with its URL,
// slots and poll.
func TestHeartbeatCarriesReplicas(t *testing.T) {
	cp := newFake()
	h := newHarness(t, cp, 20*time.Millisecond)
	for i, r := range []string{"r0", "r1"} {
		h.pools.Upsert("/rt/pool-0_"+r+".json", handoff.Handoff{
			PoolID: "pool-0", ReplicaID: r, Engine: "llamacpp", EngineVersion: "b4747", URL: fmt.Sprintf("http://127.0.0.1:%d", 8081+i),
			SlotsTotal: 2, SlotsFree: 2, Model: handoff.Model{ID: "m"},
		})
	}
	polled := time.Now()
	h.pools.SetLoad("pool-0", "r0", pool.Load{Busy: 2, Deferred: 1, At: polled})
	h.pools.SetLoad("pool-0", "r1", pool.Load{Busy: 1, At: polled.Add(time.Millisecond)})
	h.start(t)
	var hb api.HeartbeatRequest
	cp.waitCalls(t, "a heartbeat", func(c []call) bool {
		for _, c := range c {
			if c.kind == "heartbeat" {
				hb = c.hb
				return true
			}
		}
		return false
	})
	want := api.PoolState{
		PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 1, Engine: "llamacpp", EngineVersion: "b4747",
		URL: "http://127.0.0.1:8081", Models: []string{"m"}, RequestsDeferred: 1, SlotsObservedAt: polled,
		Replicas: []api.ReplicaState{
			{ReplicaID: "r0", URL: "http://127.0.0.1:8081", Ready: true, SlotsTotal: 2, SlotsFree: 0, EngineVersion: "b4747", RequestsDeferred: 1, SlotsObservedAt: polled},
			{ReplicaID: "r1", URL: "http://127.0.0.1:8082", Ready: true, SlotsTotal: 2, SlotsFree: 1, EngineVersion: "b4747", SlotsObservedAt: polled.Add(time.Millisecond)},
		},
	}
	if len(hb.Pools) == 0 || !reflect.DeepEqual(hb.Pools[0], want) {
		t.Fatalf("heartbeat pools =\n  %+v\nwant\n  %+v", hb.Pools, want)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("after run: draining heartbeat then deregister", func(t *testing.T) {
		cp := newFake()
		h := newHarness(t, cp, 10*time.Second)
		h.start(t)
		cp.waitCalls(t, "first heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
		h.stop(t)
		before := len(cp.snapshot())

		if err := h.agent.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		calls := cp.snapshot()[before:]
		if got, want := kinds(calls), "heartbeat,deregister"; got != want {
			t.Fatalf("shutdown calls = %s, want %s", got, want)
		}
		hb := calls[0].hb
		if !hb.Draining {
			t.Error("final heartbeat is not marked draining")
		}
		if len(hb.Pools) != 2 {
			t.Fatalf("final heartbeat pools = %+v, want 2", hb.Pools)
		}
		for _, p := range hb.Pools {
			if !p.Draining {
				t.Errorf("pool %s not draining in the final heartbeat", p.PoolID)
			}
		}
		if calls[1].nodeID != nodeID {
			t.Errorf("deregistered %q, want %q", calls[1].nodeID, nodeID)
		}
		h.compareMetrics(t, `
# HELP llorch_agent_registered 1 while the control plane holds this node's registration.
# TYPE llorch_agent_registered gauge
llorch_agent_registered 0
`, "llorch_agent_registered")
	})

	t.Run("never registered: sends nothing", func(t *testing.T) {
		cp := newFake()
		boom := errors.New("connection refused")
		cp.registerErr = boom
		h := newHarness(t, cp, 10*time.Second)
		h.start(t)
		cp.waitCalls(t, "a failed registration", func(c []call) bool { return len(c) >= 2 })
		h.stop(t)
		before := len(cp.snapshot())
		if err := h.agent.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if calls := cp.snapshot()[before:]; len(calls) != 0 {
			t.Errorf("shutdown of an unregistered agent sent %s", kinds(calls))
		}
		for _, p := range h.pools.Snapshot() {
			if !p.Draining {
				t.Errorf("pool %s not drained locally", p.PoolID)
			}
		}
		h.compareMetrics(t, `
# HELP llorch_agent_registered 1 while the control plane holds this node's registration.
# TYPE llorch_agent_registered gauge
llorch_agent_registered 0
`, "llorch_agent_registered")
	})

	t.Run("failed final heartbeat still deregisters", func(t *testing.T) {
		cp := newFake()
		h := newHarness(t, cp, 10*time.Second)
		h.start(t)
		cp.waitCalls(t, "first heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
		h.stop(t)
		hbErr := errors.New("timeout")
		cp.mu.Lock()
		cp.heartbeats = []hbAnswer{{err: hbErr}}
		cp.mu.Unlock()
		before := len(cp.snapshot())
		if err := h.agent.Shutdown(context.Background()); !errors.Is(err, hbErr) {
			t.Errorf("Shutdown = %v, want the heartbeat error", err)
		}
		if got, want := kinds(cp.snapshot()[before:]), "heartbeat,deregister"; got != want {
			t.Errorf("shutdown calls = %s, want %s", got, want)
		}
	})

	t.Run("failed deregistration is returned", func(t *testing.T) {
		cp := newFake()
		h := newHarness(t, cp, 10*time.Second)
		h.start(t)
		cp.waitCalls(t, "first heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
		h.stop(t)
		deregErr := errors.New("503 Service Unavailable")
		cp.mu.Lock()
		cp.deregisterErr = deregErr
		cp.mu.Unlock()
		if err := h.agent.Shutdown(context.Background()); !errors.Is(err, deregErr) {
			t.Errorf("Shutdown = %v, want the deregistration error", err)
		}
	})
}

func TestNewRejectsDuplicateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := agent.Options{ControlPlane: newFake(), Pools: pool.NewTable(nil), Registerer: reg}
	if _, err := agent.New(opts); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := agent.New(opts); err == nil {
		t.Error("second New on the same registerer succeeded, want a registration error")
	}
}

// logRecords keeps the records logged through it.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// atLeast returns the messages logged at level or above.
func (l *logRecords) atLeast(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if r.Level >= level {
			out = append(out, r.Message)
		}
	}
	return out
}

// errUnauthorized is what api.Client returns for a 401.
var errUnauthorized = fmt.Errorf("POST /v2/nodes/register: %w (401 Unauthorized: UNAUTHORIZED: missing or invalid bearer token)", api.ErrUnauthorized)

// TestRefusedTokenIsAnErrorAndBacksOff: registration answered 401 logs an
// ERROR naming --api-token/LLORCH_API_TOKEN and retries at the backoff's
// cap, not its base; a 500 keeps the usual WARN and quick retries.
func TestRefusedTokenIsAnErrorAndBacksOff(t *testing.T) {
	const maxDelay = 100 * time.Millisecond
	for _, tt := range []struct {
		name      string
		err       error
		wantError bool
	}{
		{"401", errUnauthorized, true},
		{"500", errors.New("POST /v2/nodes/register: 500 Internal Server Error"), false},
	} {
		// In a synctest bubble the sleep below is exact: the agent's retry
		// timers and the calls' times run on the bubble's fake clock, so
		// the counts and gaps do not depend on the machine's load.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cp := newFake()
				cp.registerErr = tt.err
				logs := &logRecords{}
				h := newHarnessWith(t, cp, time.Second, func(o *agent.Options) {
					o.Backoff = backoff.Backoff{Base: time.Millisecond, Max: maxDelay}
					o.Logger = slog.New(logs)
				})
				h.start(t)
				time.Sleep(3 * maxDelay)
				h.stop(t)
				calls := cp.snapshot()
				errs := logs.atLeast(slog.LevelError)
				if !tt.wantError {
					if len(errs) != 0 {
						t.Errorf("a 500 logged at ERROR: %q", errs)
					}
					if len(calls) < 5 {
						t.Errorf("%d registrations in %v: a 500 is retried after the backoff's base, want >= 5", len(calls), 3*maxDelay)
					}
					return
				}
				if len(errs) == 0 || !strings.Contains(errs[0], "--api-token/LLORCH_API_TOKEN") || !strings.Contains(errs[0], "401") {
					t.Fatalf("ERROR records %q, want one naming the refused token and --api-token/LLORCH_API_TOKEN", errs)
				}
				// Each retry waits between half the cap and the cap.
				if len(calls) > 7 {
					t.Errorf("%d registrations in %v with the token refused: want at most 7", len(calls), 3*maxDelay)
				}
				for i := 1; i < len(calls); i++ {
					if gap := calls[i].at.Sub(calls[i-1].at); gap < maxDelay/2 {
						t.Errorf("retry %d came %v after a 401, want >= %v", i, gap, maxDelay/2)
					}
				}
			})
		})
	}
}

// TestHeartbeatRefusedTokenReRegistersWithBackoff: a heartbeat answered 401
// (the control plane's token changed) is logged at ERROR; the agent goes
// back to registering, at the backoff's cap.
func TestHeartbeatRefusedTokenReRegistersWithBackoff(t *testing.T) {
	const maxDelay = 100 * time.Millisecond
	cp := newFake()
	cp.heartbeats = []hbAnswer{{err: errUnauthorized}}
	logs := &logRecords{}
	h := newHarnessWith(t, cp, time.Hour, func(o *agent.Options) {
		o.Backoff = backoff.Backoff{Base: time.Millisecond, Max: maxDelay}
		o.Logger = slog.New(logs)
	})
	h.start(t)
	calls := cp.waitCalls(t, "registration after the refused heartbeat", func(c []call) bool { return count(c, "register") >= 2 })
	if got, want := kinds(calls[:3]), "register,heartbeat,register"; got != want {
		t.Fatalf("calls = %s, want %s", got, want)
	}
	if gap := calls[2].at.Sub(calls[1].at); gap < maxDelay/2 {
		t.Errorf("re-registration %v after the 401, want >= %v", gap, maxDelay/2)
	}
	if errs := logs.atLeast(slog.LevelError); len(errs) != 1 || !strings.Contains(errs[0], "--api-token/LLORCH_API_TOKEN") {
		t.Errorf("ERROR records %q, want one naming --api-token/LLORCH_API_TOKEN", errs)
	}
}

// TestShutdownStepsTakeTheCallersDeadline: Drain and Deregister are bounded
// by their context's deadline (--shutdown-timeout), not by RequestTimeout;
// without a deadline RequestTimeout bounds them.
func TestShutdownStepsTakeTheCallersDeadline(t *testing.T) {
	cp := newFake()
	h := newHarnessWith(t, cp, time.Hour, func(o *agent.Options) { o.RequestTimeout = 20 * time.Millisecond })
	h.start(t)
	cp.waitCalls(t, "first heartbeat", func(c []call) bool { return count(c, "heartbeat") >= 1 })
	h.stop(t)
	cp.mu.Lock()
	cp.hbDelay = 200 * time.Millisecond
	cp.mu.Unlock()

	if err := h.agent.Drain(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain without a deadline = %v, want RequestTimeout's deadline exceeded", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.agent.Drain(ctx); err != nil {
		t.Fatalf("Drain with 5s to go = %v, want the slow heartbeat to get through", err)
	}
}
