package etcdstore

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/registry/etcdstore/etcdtest"
)

// replica is one control plane's registry kept in step by a Store.
type replica struct {
	reg   *registry.Registry
	store *Store
	stop  func()
}

func startReplica(t *testing.T, endpoint, name string, timeout time.Duration) *replica {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	reg := registry.New(registry.Options{Timeout: timeout, Logger: log})
	s := New(Options{Client: cli, Registry: reg, Replica: name, Prefix: "/test", Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	r := &replica{reg: reg, store: s}
	r.stop = func() { cancel(); <-done; cli.Close() }
	t.Cleanup(r.stop)
	waitFor(t, 10*time.Second, name+" synced", s.Synced)
	return r
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return clocktest.WaitFor(t, d, what, cond)
}

func status(r *replica, id string) string {
	n, ok := r.reg.Get(id)
	if !ok {
		return "absent"
	}
	return n.Status
}

func register(r *replica, id string) {
	r.reg.Register(api.RegisterRequest{NodeID: id, Address: "http://127.0.0.1:9/" + id, Pools: []string{"p"}})
}

func heartbeat(t *testing.T, r *replica, id string, slots int) {
	t.Helper()
	if err := r.reg.Heartbeat(id, api.HeartbeatRequest{Timestamp: time.Now(),
		Pools: []api.PoolState{{PoolID: "p", Ready: true, SlotsTotal: slots, SlotsFree: slots}}}); err != nil {
		t.Fatalf("heartbeat %s: %v", id, err)
	}
}

func slotsOf(r *replica, id string) int {
	n, ok := r.reg.Get(id)
	if !ok || len(n.Pools) == 0 {
		return -1
	}
	return n.Pools[0].SlotsTotal
}

// Registrations, heartbeats and deregistrations received by one replica
// reach the others; a replica that starts late reads the whole fleet.
func TestReplicasShareTheFleet(t *testing.T) {
	e := etcdtest.Start(t)
	a := startReplica(t, e.URL(), "a", 10*time.Second)
	b := startReplica(t, e.URL(), "b", 10*time.Second)

	register(a, "n1")
	waitFor(t, 5*time.Second, "n1 online on b", func() bool { return status(b, "n1") == api.StatusOnline })
	heartbeat(t, b, "n1", 4)
	waitFor(t, 5*time.Second, "b's heartbeat on a", func() bool { return slotsOf(a, "n1") == 4 })
	heartbeat(t, a, "n1", 8)
	waitFor(t, 5*time.Second, "a's heartbeat on b", func() bool { return slotsOf(b, "n1") == 8 })

	register(b, "n2")
	c := startReplica(t, e.URL(), "c", 10*time.Second)
	for _, id := range []string{"n1", "n2"} {
		if status(c, id) != api.StatusOnline {
			t.Errorf("late replica c: %s is %s, want online", id, status(c, id))
		}
	}
	if slotsOf(c, "n1") != 8 {
		t.Errorf("late replica c: n1 has %d slots, want the last heartbeat's 8", slotsOf(c, "n1"))
	}

	if err := b.reg.Deregister("n1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n1 gone on a and c", func() bool { return status(a, "n1") == "absent" && status(c, "n1") == "absent" })
	if status(a, "n2") != api.StatusOnline {
		t.Errorf("n2 is %s on a, want online", status(a, "n2"))
	}
}

// A node whose heartbeats stop goes offline on every replica by its
// lease's expiry — no replica sweeps — between the timeout and a second
// and a half after its last heartbeat; one heartbeat to any replica
// brings it back everywhere.
func TestLeaseExpiryMarksOfflineEverywhere(t *testing.T) {
	e := etcdtest.Start(t)
	const timeout = 2 * time.Second
	a := startReplica(t, e.URL(), "a", timeout)
	b := startReplica(t, e.URL(), "b", timeout)
	register(a, "n1")
	register(a, "kept")
	waitFor(t, 5*time.Second, "nodes on b", func() bool { return status(b, "kept") == api.StatusOnline && status(b, "n1") == api.StatusOnline })
	last := time.Now()
	stop := make(chan struct{})
	beats := make(chan struct{})
	go func() { // "kept" keeps heartbeating, to a and b in turn
		defer close(beats)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			r := a
			if i%2 == 1 {
				r = b
			}
			_ = r.reg.Heartbeat("kept", api.HeartbeatRequest{Timestamp: time.Now()})
		}
	}()
	waitFor(t, timeout+5*time.Second, "n1 offline on a and b", func() bool {
		return status(a, "n1") == api.StatusOffline && status(b, "n1") == api.StatusOffline
	})
	took := time.Since(last)
	close(stop)
	<-beats
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("n1 offline %v after its last heartbeat; want between the timeout %v and %v", took, timeout, timeout+3*time.Second)
	}
	if status(a, "kept") != api.StatusOnline || status(b, "kept") != api.StatusOnline {
		t.Errorf("a heartbeating node went offline: a %s, b %s", status(a, "kept"), status(b, "kept"))
	}
	heartbeat(t, b, "n1", 2)
	waitFor(t, 5*time.Second, "n1 back on a", func() bool { return status(a, "n1") == api.StatusOnline })

	c := startReplica(t, e.URL(), "c", timeout)
	if err := b.reg.Deregister("kept"); err != nil {
		t.Fatal(err)
	}
	register(b, "gone")
	waitFor(t, 5*time.Second, "gone on c", func() bool { return status(c, "gone") == api.StatusOnline })
	waitFor(t, timeout+5*time.Second, "gone offline on c", func() bool { return status(c, "gone") == api.StatusOffline })
	// An offline node is remembered, also by a replica that starts later.
	d := startReplica(t, e.URL(), "d", timeout)
	if status(d, "gone") != api.StatusOffline {
		t.Errorf("late replica d: gone is %s, want offline", status(d, "gone"))
	}
}

// While etcd is away no node is marked offline, the outage shows in Up
// and Condition, and heartbeats received meanwhile reach the others once
// it is back. (The embedded server's Close takes up to 7 s, during which
// it still expires leases: the timeout here is longer.)
func TestEtcdOutage(t *testing.T) {
	e := etcdtest.Start(t)
	const timeout = 8 * time.Second
	a := startReplica(t, e.URL(), "a", timeout)
	b := startReplica(t, e.URL(), "b", timeout)
	register(a, "n1")
	waitFor(t, 5*time.Second, "n1 on b", func() bool { return status(b, "n1") == api.StatusOnline })
	stop, beats := make(chan struct{}), make(chan struct{})
	go func() { // n1's agent heartbeats to a throughout
		defer close(beats)
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			_ = a.reg.Heartbeat("n1", api.HeartbeatRequest{Timestamp: time.Now(),
				Pools: []api.PoolState{{PoolID: "p", Ready: true, SlotsTotal: 6, SlotsFree: 6}}})
		}
	}()
	defer func() { close(stop); <-beats }()
	waitFor(t, 5*time.Second, "a's heartbeats on b", func() bool { return slotsOf(b, "n1") == 6 })

	e.Stop()
	if a.store.Up() {
		waitFor(t, 10*time.Second, "a sees etcd down", func() bool { return !a.store.Up() })
	}
	if a.store.Condition() == "" {
		t.Error("Condition is empty while etcd is down")
	}
	// For longer than the timeout — with a sweep, n1 would go offline on
	// b, which hears nothing of it — n1 stays online on both, throughout.
	for end := time.Now().Add(timeout + time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status(a, "n1") != api.StatusOnline || status(b, "n1") != api.StatusOnline {
			t.Fatalf("etcd down: n1 is %s on a, %s on b; want online (a replica cannot know)", status(a, "n1"), status(b, "n1"))
		}
	}
	held, _ := b.reg.Get("n1")

	e.Start()
	waitFor(t, 15*time.Second, "a's held heartbeats on b", func() bool {
		n, _ := b.reg.Get("n1")
		return n.LastHeartbeat.After(held.LastHeartbeat)
	})
	waitFor(t, 10*time.Second, "a up again", func() bool { return a.store.Up() && a.store.Condition() == "" })
	if status(b, "n1") != api.StatusOnline {
		t.Errorf("after the outage n1 is %s on b, want online", status(b, "n1"))
	}
}

func TestParseKey(t *testing.T) {
	s := &Store{prefix: "/llorch/"}
	for _, tt := range []struct{ key, id, suffix string }{
		{"/llorch/nodes/n1/state", "n1", "state"},
		{"/llorch/nodes/a.b-c/registration", "a.b-c", "registration"},
	} {
		id, suffix, ok := s.parseKey(tt.key)
		if !ok || id != tt.id || suffix != tt.suffix {
			t.Errorf("parseKey(%q) = %q, %q, %v", tt.key, id, suffix, ok)
		}
		if got := s.nodeKey(id, suffix); got != tt.key {
			t.Errorf("nodeKey(%q, %q) = %q, want %q", id, suffix, got, tt.key)
		}
	}
	for _, bad := range []string{"/other/nodes/n1/state", "/llorch/nodes/", "/llorch/nodes/x"} {
		if _, _, ok := s.parseKey(bad); ok {
			t.Errorf("parseKey(%q) accepted", bad)
		}
	}
}

// A node registered here while the snapshot is read (before its write
// reached etcd) is not dropped by the snapshot.
func TestSnapshotKeepsWhatIsNotYetWritten(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	reg := registry.New(registry.Options{Timeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	s := New(Options{Client: cli, Registry: reg, Replica: "a", Prefix: "/test", Logger: slog.New(slog.DiscardHandler)})
	reg.Register(api.RegisterRequest{NodeID: "early", Address: "http://127.0.0.1:9/early"}) // pending: the store does not run yet
	if _, err := s.snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, ok := reg.Get("early"); !ok || n.Status != api.StatusOnline {
		t.Fatalf("a registration not yet written was dropped or marked %q by the snapshot", n.Status)
	}
	// Once written and gone from etcd (deregistered by another replica),
	// a snapshot does drop it.
	if err := s.write(context.Background(), s.take()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(context.Background(), s.nodeKey("early", ""), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := reg.Get("early"); ok {
		t.Fatal("a node gone from etcd survived a snapshot")
	}
}

// A replica's tasks in flight reach the others within a few publication
// intervals, and leave with the replica.
func TestPeersSeeEachOthersTasks(t *testing.T) {
	e := etcdtest.Start(t)
	a := startReplica(t, e.URL(), "a", 10*time.Second)
	b := startReplica(t, e.URL(), "b", 10*time.Second)
	var mu sync.Mutex
	counts := map[string]int{"n1/pool-0": 3}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.store.PublishInFlight(ctx, func() map[string]int { mu.Lock(); defer mu.Unlock(); return maps.Clone(counts) })
		close(done)
	}()
	peerCount := func(r *replica, key string) int { m, _ := r.store.Peers(); return m[key] }
	took := waitFor(t, 2*time.Second, "a's 3 tasks on b", func() bool { return peerCount(b, "n1/pool-0") == 3 })
	t.Logf("a's tasks visible on b after %v", took)
	if peerCount(a, "n1/pool-0") != 0 {
		t.Error("a counts its own tasks as a peer's")
	}
	mu.Lock()
	counts = map[string]int{"n1/pool-0": 1, "n2/pool-0": 2}
	mu.Unlock()
	waitFor(t, 2*time.Second, "a's new counts on b", func() bool { return peerCount(b, "n1/pool-0") == 1 && peerCount(b, "n2/pool-0") == 2 })
	cancel()
	<-done
	waitFor(t, 2*time.Second, "a's counts gone from b", func() bool { m, _ := b.store.Peers(); return len(m) == 0 })
}
