package registry

import (
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

// journal records what a registry tells its Journal.
type journal struct{ calls []string }

func (j *journal) Registered(r Registration) {
	j.calls = append(j.calls, "registered "+r.Request.NodeID)
}
func (j *journal) Heartbeat(id string, l Liveness) {
	j.calls = append(j.calls, "heartbeat "+id+" "+l.Status)
}
func (j *journal) Deregistered(id string) { j.calls = append(j.calls, "deregistered "+id) }

// The registry journals its own changes and not those applied from the
// shared store.
func TestJournalHearsOwnChangesOnly(t *testing.T) {
	r, clk := newTestRegistry(30 * time.Second)
	j := &journal{}
	r.SetJournal(j)
	r.Register(api.RegisterRequest{NodeID: "n1", Address: "http://a"})
	clk.Advance(time.Second)
	_ = r.Heartbeat("n1", api.HeartbeatRequest{Draining: true})
	r.ApplyRegistration(Registration{Request: api.RegisterRequest{NodeID: "n2", Address: "http://b"}, RegisteredAt: clk.Now()})
	r.ApplyLiveness("n2", Liveness{Status: api.StatusOnline, LastHeartbeat: clk.Now().Add(time.Millisecond)})
	_ = r.Deregister("n1")
	r.ApplyDeregistration("n2")
	want := []string{"registered n1", "heartbeat n1 draining", "deregistered n1"}
	if len(j.calls) != len(want) {
		t.Fatalf("journal %v, want %v", j.calls, want)
	}
	for i := range want {
		if j.calls[i] != want[i] {
			t.Errorf("journal[%d] = %q, want %q", i, j.calls[i], want[i])
		}
	}
}

func TestApply(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	reg := func(at time.Time) Registration {
		return Registration{Request: api.RegisterRequest{NodeID: "n1", Address: "http://a"}, RegisteredAt: at}
	}
	tests := []struct {
		name       string
		do         func(r *Registry) bool
		want       bool
		wantStatus string // "" : absent
	}{
		{"registration of an unknown node", func(r *Registry) bool { return r.ApplyRegistration(reg(t0.Add(time.Second))) }, true, api.StatusOnline},
		{"older registration ignored", func(r *Registry) bool { return r.ApplyRegistration(reg(t0.Add(-time.Second))) }, false, api.StatusOnline},
		{"newer liveness applied", func(r *Registry) bool {
			return r.ApplyLiveness("n1", Liveness{Status: api.StatusDraining, LastHeartbeat: t0.Add(time.Second)})
		}, true, api.StatusDraining},
		{"older liveness ignored", func(r *Registry) bool {
			return r.ApplyLiveness("n1", Liveness{Status: api.StatusDraining, LastHeartbeat: t0.Add(-time.Second)})
		}, false, api.StatusOnline},
		{"liveness of an unknown node ignored", func(r *Registry) bool {
			return r.ApplyLiveness("n9", Liveness{Status: api.StatusOnline, LastHeartbeat: t0.Add(time.Second)})
		}, false, api.StatusOnline},
		{"expiry of a node heard from within the slack ignored", func(r *Registry) bool { return r.ApplyExpiry("n1", time.Second) }, false, api.StatusOnline},
		{"expiry with no slack left", func(r *Registry) bool { return r.ApplyExpiry("n1", 30*time.Second) }, true, api.StatusOffline},
		{"deregistration", func(r *Registry) bool { return r.ApplyDeregistration("n1") }, true, ""},
		{"retain drops the others", func(r *Registry) bool { return r.Retain(map[string]bool{"n2": true}) == 1 }, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTestRegistry(30 * time.Second)
			clk.Set(t0)
			r.Register(api.RegisterRequest{NodeID: "n1", Address: "http://a"}) // at t0
			if got := tt.do(r); got != tt.want {
				t.Errorf("applied %v, want %v", got, tt.want)
			}
			n, ok := r.Get("n1")
			switch {
			case tt.wantStatus == "" && ok:
				t.Errorf("n1 is %s, want absent", n.Status)
			case tt.wantStatus != "" && n.Status != tt.wantStatus:
				t.Errorf("n1 is %q, want %s", n.Status, tt.wantStatus)
			}
		})
	}
}

// Membership moves when what Addresses lists would change, and not on the
// heartbeats of nodes that stay online (a cache keyed by it is rebuilt per
// change, not per heartbeat).
func TestMembership(t *testing.T) {
	r, clk := newTestRegistry(30 * time.Second)
	steps := []struct {
		name  string
		do    func()
		moves bool
	}{
		{"register", func() { r.Register(api.RegisterRequest{NodeID: "n1", Address: "http://a"}) }, true},
		{"heartbeat of an online node", func() { _ = r.Heartbeat("n1", api.HeartbeatRequest{}) }, false},
		{"draining heartbeat", func() { _ = r.Heartbeat("n1", api.HeartbeatRequest{Draining: true}) }, false},
		{"sweep that expires nothing", func() { r.ExpireStale() }, false},
		{"expiry", func() { clk.Advance(31 * time.Second); r.ExpireStale() }, true},
		{"heartbeat back from offline", func() { _ = r.Heartbeat("n1", api.HeartbeatRequest{}) }, true},
		{"liveness applied to an online node", func() {
			r.ApplyLiveness("n1", Liveness{Status: api.StatusOnline, LastHeartbeat: clk.Now().Add(time.Second)})
		}, false},
		{"deregister", func() { _ = r.Deregister("n1") }, true},
	}
	for _, st := range steps {
		before := r.Membership()
		st.do()
		if moved := r.Membership() != before; moved != st.moves {
			t.Errorf("%s: membership moved %v, want %v", st.name, moved, st.moves)
		}
	}
}
