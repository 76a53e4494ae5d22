package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
)

var _ Clock = (*clocktest.Clock)(nil)

func newTestRegistry(timeout time.Duration) (*Registry, *clocktest.Clock) {
	clk := clocktest.New(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	return New(Options{Timeout: timeout, Clock: clk, Logger: slog.New(slog.DiscardHandler)}), clk
}

func reg(id string) api.RegisterRequest {
	return api.RegisterRequest{NodeID: id, Address: "http://127.0.0.1:9200", Pools: []string{"pool-0"}}
}

func status(t *testing.T, r *Registry, id string) string {
	t.Helper()
	n, ok := r.Get(id)
	if !ok {
		return "absent"
	}
	return n.Status
}

func TestLifecycle(t *testing.T) {
	const timeout = 30 * time.Second
	type step struct {
		name    string
		do      func(r *Registry, c *clocktest.Clock) error
		wantErr error
		want    string // status of node "n1" after the step
	}
	hb := func(r *Registry, _ *clocktest.Clock) error { return r.Heartbeat("n1", api.HeartbeatRequest{}) }
	advance := func(d time.Duration) func(*Registry, *clocktest.Clock) error {
		return func(r *Registry, c *clocktest.Clock) error { c.Advance(d); r.ExpireStale(); return nil }
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"heartbeat before register is unknown", []step{
			{"hb", hb, ErrUnknownNode, "absent"},
		}},
		{"register is online", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
		}},
		{"timeout boundary is exclusive", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"at timeout", advance(timeout), nil, api.StatusOnline},
			{"just past", advance(time.Millisecond), nil, api.StatusOffline},
		}},
		{"heartbeats keep it online", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"20s", advance(20 * time.Second), nil, api.StatusOnline},
			{"hb", hb, nil, api.StatusOnline},
			{"20s more", advance(20 * time.Second), nil, api.StatusOnline},
			{"hb", hb, nil, api.StatusOnline},
			{"31s silent", advance(31 * time.Second), nil, api.StatusOffline},
		}},
		{"offline recovers on next heartbeat", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"silent", advance(time.Minute), nil, api.StatusOffline},
			{"hb", hb, nil, api.StatusOnline},
		}},
		{"draining heartbeat", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"drain", func(r *Registry, _ *clocktest.Clock) error {
				return r.Heartbeat("n1", api.HeartbeatRequest{Pools: []api.PoolState{{PoolID: "p", Draining: true}}})
			}, nil, api.StatusDraining},
			{"draining also expires", advance(time.Minute), nil, api.StatusOffline},
		}},
		{"deregister removes", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"deregister", func(r *Registry, _ *clocktest.Clock) error { return r.Deregister("n1") }, nil, "absent"},
			{"again", func(r *Registry, _ *clocktest.Clock) error { return r.Deregister("n1") }, ErrUnknownNode, "absent"},
			{"hb after", hb, ErrUnknownNode, "absent"},
		}},
		{"re-register overwrites and revives", []step{
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
			{"silent", advance(time.Minute), nil, api.StatusOffline},
			{"register", func(r *Registry, _ *clocktest.Clock) error { r.Register(reg("n1")); return nil }, nil, api.StatusOnline},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTestRegistry(timeout)
			for _, s := range tt.steps {
				if err := s.do(r, clk); !errors.Is(err, s.wantErr) {
					t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
				}
				if got := status(t, r, "n1"); got != s.want {
					t.Fatalf("%s: status = %q, want %q", s.name, got, s.want)
				}
			}
		})
	}
}

func TestRegisterOverwritesFields(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	r.Register(reg("n1"))
	if err := r.Heartbeat("n1", api.HeartbeatRequest{Pools: []api.PoolState{{PoolID: "pool-0", Ready: true}}}); err != nil {
		t.Fatal(err)
	}
	second := reg("n1")
	second.Address = "http://127.0.0.1:9999"
	second.MachineID = "m-7"
	r.Register(second)
	n, _ := r.Get("n1")
	if n.Address != second.Address || n.MachineID != "m-7" {
		t.Fatalf("after re-register: address %q machine %q", n.Address, n.MachineID)
	}
	if len(n.Pools) != 0 {
		t.Fatalf("re-registration must drop the old pool snapshot until the next heartbeat, got %+v", n.Pools)
	}
	if r.Len() != 1 {
		t.Fatalf("Len = %d, want 1", r.Len())
	}
}

func TestMachineIDDefaultsToNodeID(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	r.Register(reg("n1"))
	if n, _ := r.Get("n1"); n.MachineID != "n1" {
		t.Fatalf("machine_id = %q, want n1", n.MachineID)
	}
}

func TestHeartbeatAgeAndSnapshots(t *testing.T) {
	r, clk := newTestRegistry(time.Minute)
	r.Register(reg("n1"))
	clk.Advance(1500 * time.Millisecond)
	pools := []api.PoolState{{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 3, Models: []string{"m"}}}
	if err := r.Heartbeat("n1", api.HeartbeatRequest{Pools: pools, GPUs: []api.GPUState{{DeviceID: 0, VRAMFreeBytes: 7}}}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(250 * time.Millisecond)
	n, _ := r.Get("n1")
	if n.HeartbeatAgeMS != 250 {
		t.Fatalf("heartbeat_age_ms = %d, want 250", n.HeartbeatAgeMS)
	}
	if got := n.LastHeartbeat.Sub(n.RegisteredAt); got != 1500*time.Millisecond {
		t.Fatalf("last_heartbeat - registered_at = %v", got)
	}
	if len(n.Pools) != 1 || n.Pools[0].SlotsFree != 3 || len(n.GPUs) != 1 || n.GPUs[0].VRAMFreeBytes != 7 {
		t.Fatalf("snapshots = %+v %+v", n.Pools, n.GPUs)
	}
}

func TestListFiltersOffline(t *testing.T) {
	r, clk := newTestRegistry(10 * time.Second)
	r.Register(reg("b"))
	r.Register(reg("a"))
	clk.Advance(11 * time.Second)
	r.Register(reg("c"))
	if got := r.ExpireStale(); strings.Join(got, ",") != "a,b" {
		t.Fatalf("expired %v, want [a b]", got)
	}
	if got := r.ExpireStale(); got != nil {
		t.Fatalf("second sweep expired %v again", got)
	}
	ids := func(ns []api.NodeInfo) string {
		var s []string
		for _, n := range ns {
			s = append(s, n.NodeID+"="+n.Status)
		}
		return strings.Join(s, ",")
	}
	if got := ids(r.List(false)); got != "c=online" {
		t.Fatalf("List(false) = %s", got)
	}
	if got := ids(r.List(true)); got != "a=offline,b=offline,c=online" {
		t.Fatalf("List(true) = %s", got)
	}
}

func TestMetrics(t *testing.T) {
	r, clk := newTestRegistry(10 * time.Second)
	r.Register(reg("n1"))
	r.Register(reg("n2"))
	_ = r.Heartbeat("n1", api.HeartbeatRequest{Pools: []api.PoolState{
		{PoolID: "a", Ready: true}, {PoolID: "b", Ready: true, Draining: true}, {PoolID: "c"},
	}})
	_ = r.Heartbeat("ghost", api.HeartbeatRequest{})
	r.RejectHeartbeat()
	r.RejectRegistration()
	clk.Advance(5 * time.Second)
	_ = r.Heartbeat("n1", api.HeartbeatRequest{Pools: []api.PoolState{{PoolID: "a", Ready: true}, {PoolID: "b", Ready: true}}})
	clk.Advance(6 * time.Second)
	r.ExpireStale() // n2 goes offline; n1 is 6s old.

	want := `
# HELP llorch_node_heartbeat_age_seconds Seconds since the node's last heartbeat (or registration).
# TYPE llorch_node_heartbeat_age_seconds gauge
llorch_node_heartbeat_age_seconds{node_id="n1"} 6
llorch_node_heartbeat_age_seconds{node_id="n2"} 11
# HELP llorch_node_heartbeat_interval_seconds The node's heartbeat interval as observed: a moving average of the gaps between its heartbeats.
# TYPE llorch_node_heartbeat_interval_seconds gauge
llorch_node_heartbeat_interval_seconds{node_id="n1"} 5
# HELP llorch_node_heartbeats_total Node heartbeats received, by outcome.
# TYPE llorch_node_heartbeats_total counter
llorch_node_heartbeats_total{outcome="invalid"} 1
llorch_node_heartbeats_total{outcome="ok"} 2
llorch_node_heartbeats_total{outcome="unknown_node"} 1
# HELP llorch_node_registrations_total Node registrations received, by outcome.
# TYPE llorch_node_registrations_total counter
llorch_node_registrations_total{outcome="invalid"} 1
llorch_node_registrations_total{outcome="ok"} 2
# HELP llorch_node_status 1 for the node's status as the control plane sees it (online, draining, offline), 0 for the others.
# TYPE llorch_node_status gauge
llorch_node_status{node_id="n1",status="draining"} 0
llorch_node_status{node_id="n1",status="offline"} 0
llorch_node_status{node_id="n1",status="online"} 1
llorch_node_status{node_id="n2",status="draining"} 0
llorch_node_status{node_id="n2",status="offline"} 1
llorch_node_status{node_id="n2",status="online"} 0
# HELP llorch_node_status_transitions_total Node status changes; from=none is a first registration, to=deregistered a removal.
# TYPE llorch_node_status_transitions_total counter
llorch_node_status_transitions_total{from="none",to="online"} 2
llorch_node_status_transitions_total{from="online",to="offline"} 1
# HELP llorch_node_timeout_seconds How long a node may go without a heartbeat before it is offline (--node-timeout).
# TYPE llorch_node_timeout_seconds gauge
llorch_node_timeout_seconds 10
# HELP llorch_nodes Registered nodes by status.
# TYPE llorch_nodes gauge
llorch_nodes{status="draining"} 0
llorch_nodes{status="offline"} 1
llorch_nodes{status="online"} 1
# HELP llorch_pools_available Pools that can take work: ready, not draining, on an online node.
# TYPE llorch_pools_available gauge
llorch_pools_available 2
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentHeartbeats runs registrations, heartbeats, sweeps, listings
// and scrapes at once; -race checks the locking, the counts check no update
// is lost.
func TestConcurrentHeartbeats(t *testing.T) {
	r, clk := newTestRegistry(time.Minute)
	const nodes, beats = 200, 50
	for i := range nodes {
		r.Register(reg(fmt.Sprintf("n%d", i)))
	}
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("n%d", i)
			for j := range beats {
				hb := api.HeartbeatRequest{Pools: []api.PoolState{{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: j % 5 % 4}}}
				if err := r.Heartbeat(id, hb); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		preg := prometheus.NewRegistry()
		preg.MustRegister(r)
		for {
			select {
			case <-stop:
				return
			default:
				clk.Advance(time.Millisecond)
				r.ExpireStale()
				_ = r.List(true)
				if _, err := preg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	if got := testutil.ToFloat64(r.metrics.heartbeats.ok); got != nodes*beats {
		t.Fatalf("heartbeats ok = %v, want %d", got, nodes*beats)
	}
	if got := len(r.List(false)); got != nodes {
		t.Fatalf("online nodes = %d, want %d", got, nodes)
	}
}

// TestHeartbeatDatesEnginePolls: a pool's (and each of its replicas')
// slots_observed_at arrives in the agent's clock and is stored in the registry's: received - (timestamp -
// observed), the age clamped to [0, MaxPollAge], whatever the skew between
// the clocks.
func TestHeartbeatDatesEnginePolls(t *testing.T) {
	const age = 2500 * time.Millisecond
	tests := []struct {
		name     string
		skew     time.Duration // agent clock - registry clock
		sent     time.Duration // heartbeat timestamp, after the poll (agent clock)
		observed bool          // the pool's engines were polled
		zeroSent bool          // the heartbeat carries no timestamp
		wantAge  time.Duration // before the heartbeat was received
	}{
		{name: "in step", sent: age, observed: true, wantAge: age},
		{name: "agent clock hours ahead", skew: 3 * time.Hour, sent: age, observed: true, wantAge: age},
		{name: "agent clock hours behind", skew: -5 * time.Hour, sent: age, observed: true, wantAge: age},
		{name: "agent clock a day behind, poll just before the heartbeat", skew: -24 * time.Hour, sent: time.Millisecond, observed: true, wantAge: time.Millisecond},
		{name: "poll at the heartbeat", sent: 0, observed: true, wantAge: 0},
		{name: "poll dated after its heartbeat is fresh", skew: time.Hour, sent: -5 * time.Second, observed: true, wantAge: 0},
		{name: "age at the bound", sent: MaxPollAge, observed: true, wantAge: MaxPollAge},
		{name: "huge age clamped", skew: -2 * time.Hour, sent: 90 * time.Minute, observed: true, wantAge: MaxPollAge},
		{name: "no timestamp: a fresh poll", skew: time.Hour, sent: age, observed: true, zeroSent: true, wantAge: 0},
		{name: "not polled stays undated", skew: time.Hour, sent: age},
		{name: "not polled, no timestamp", zeroSent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTestRegistry(time.Minute)
			r.Register(reg("n1"))
			clk.Advance(42 * time.Second)
			received := clk.Now()
			// The agent's clock reads received+skew when it sends, a
			// network hop's worth of nothing later.
			hb := api.HeartbeatRequest{Timestamp: received.Add(tt.skew)}
			p0 := api.PoolState{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 1, RequestsDeferred: 3,
				Replicas: []api.ReplicaState{{ReplicaID: "r0", SlotsTotal: 4, SlotsFree: 1}, {ReplicaID: "r1"}}}
			if tt.observed {
				p0.SlotsObservedAt = hb.Timestamp.Add(-tt.sent)
				p0.Replicas[0].SlotsObservedAt = p0.SlotsObservedAt
			}
			if tt.zeroSent {
				hb.Timestamp = time.Time{}
			}
			hb.Pools = []api.PoolState{p0, {PoolID: "pool-1"}}
			if err := r.Heartbeat("n1", hb); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second) // reads later do not move the date
			n, _ := r.Get("n1")
			got := n.Pools[0]
			switch {
			case !tt.observed && !got.SlotsObservedAt.IsZero():
				t.Errorf("observed at %v, want zero", got.SlotsObservedAt)
			case tt.observed && !got.SlotsObservedAt.Equal(received.Add(-tt.wantAge)):
				t.Errorf("observed %v before receipt, want %v", received.Sub(got.SlotsObservedAt), tt.wantAge)
			}
			// Each replica's poll is dated the same way.
			if r0 := got.Replicas[0]; !r0.SlotsObservedAt.Equal(got.SlotsObservedAt) {
				t.Errorf("replica r0 observed at %v, want the pool's %v", r0.SlotsObservedAt, got.SlotsObservedAt)
			}
			if r1 := got.Replicas[1]; !r1.SlotsObservedAt.IsZero() {
				t.Errorf("replica r1, never polled, observed at %v", r1.SlotsObservedAt)
			}
			if got.SlotsFree != 1 || got.RequestsDeferred != 3 || got.SlotsTotal != 4 {
				t.Errorf("pool-0 counts changed: %+v", got)
			}
			if !n.Pools[1].SlotsObservedAt.IsZero() {
				t.Errorf("pool-1, never polled, observed at %v", n.Pools[1].SlotsObservedAt)
			}
		})
	}
}

func TestAddressesLeaveOutOfflineNodes(t *testing.T) {
	r, clk := newTestRegistry(10 * time.Second)
	r.Register(reg("n1"))
	r.Register(reg("n2"))
	clk.Advance(11 * time.Second)
	_ = r.Heartbeat("n1", api.HeartbeatRequest{})
	r.ExpireStale() // n2 offline
	got := r.Addresses()
	if len(got) != 1 || got[0].NodeID != "n1" || got[0].URL != reg("n1").Address {
		t.Errorf("Addresses() = %+v, want n1 alone", got)
	}
}
