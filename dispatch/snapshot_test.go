package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

// versionedFleet is a fleet that says when it changed, as the registry does.
type versionedFleet struct {
	staticFleet
	version atomic.Uint64
	builds  atomic.Int64
}

func (f *versionedFleet) Version() uint64 { return f.version.Load() }

func (f *versionedFleet) Candidates() []scheduler.Candidate {
	f.builds.Add(1)
	return f.staticFleet.Candidates()
}

// countingUtil counts Get calls and has a settable version.
type countingUtil struct {
	mu      sync.Mutex
	gets    int
	version uint64
}

func (u *countingUtil) Get(string, string, string) scheduler.Utilization {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gets++
	return scheduler.Utilization{}
}

func (u *countingUtil) Version() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.version
}

func newSnapshotDispatcher(t *testing.T, f *versionedFleet, util *countingUtil) (*Dispatcher, *clocktest.Clock) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
	d, err := New(Options{Fleet: f, Util: util, Queue: admission.New(16, admission.Reject), Logger: quiet,
		Scheduling: scheduler.Options{StaleAfter: time.Minute, Quarantine: time.Minute},
		Now:        clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return d, clock
}

func place(t *testing.T, d *Dispatcher, id string) Placement {
	t.Helper()
	j := NewJob(id, admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
	if _, _, e := d.Submit(j); e != nil {
		t.Fatalf("submit %s: %v", id, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p, e, err := j.Wait(ctx)
	if err != nil || e != nil {
		t.Fatalf("%s not placed: %v %v", id, e, err)
	}
	return p
}

// TestCachedSnapshotKeepsInFlightRight: with a fleet that never changes
// (the snapshot is never rebuilt), slots taken and released by this control
// plane are still counted exactly.
func TestCachedSnapshotKeepsInFlightRight(t *testing.T) {
	f := &versionedFleet{}
	f.set(schedtest.Pool("pool-0").Slots(1, 1).Obj())
	d, _ := newSnapshotDispatcher(t, f, &countingUtil{})
	first := place(t, d, "a")
	// The only slot is taken: the next job queues instead of landing there.
	j := NewJob("b", admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
	if _, _, e := d.Submit(j); e != nil {
		t.Fatal(e)
	}
	if d.opts.Queue.Position("b") != 0 {
		t.Fatal("b was placed on a busy slot")
	}
	d.Release(first, "", Succeeded, Observation{})
	d.pass()
	second, e, err := j.Wait(context.Background())
	if err != nil || e != nil {
		t.Fatalf("b after the release: %v %v", e, err)
	}
	d.Release(second, "", Succeeded, Observation{})
	// Both released: the cached candidate shows the slot free again.
	place(t, d, "c")
	if n := f.builds.Load(); n != 1 {
		t.Fatalf("an unchanged fleet was rebuilt %d times, want once", n)
	}
}

// TestSnapshotRebuildsAfterChangesAtMostEveryInterval: a change is seen
// once rebuildEvery has passed since the last build, not before.
func TestSnapshotRebuildsAfterChangesAtMostEveryInterval(t *testing.T) {
	f := &versionedFleet{}
	f.set(schedtest.Pool("pool-0").Slots(4, 4).Obj())
	util := &countingUtil{}
	d, clock := newSnapshotDispatcher(t, f, util)
	p := place(t, d, "a")
	d.Release(p, "", Succeeded, Observation{})
	getsAfterFirst := util.gets

	// The pool drains; the fleet says it changed.
	f.set(schedtest.Pool("pool-0").Slots(4, 4).Draining().Obj())
	f.version.Add(1)
	clock.Advance(rebuildEvery / 2)
	p = place(t, d, "b") // within the interval: the old snapshot stands
	d.Release(p, "", Succeeded, Observation{})
	if f.builds.Load() != 1 {
		t.Fatalf("rebuilt within %v of the last build", rebuildEvery)
	}
	if util.gets != getsAfterFirst {
		t.Fatal("utilisation re-read without a new version")
	}

	clock.Advance(rebuildEvery)
	j := NewJob("c", admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
	if _, _, e := d.Submit(j); e == nil {
		t.Fatal("a task was admitted onto a pool the rebuilt snapshot shows draining")
	}
	if f.builds.Load() != 2 {
		t.Fatalf("builds = %d after the interval, want 2", f.builds.Load())
	}
	if util.gets <= getsAfterFirst {
		t.Fatal("a rebuilt snapshot must re-read utilisation")
	}
	// A new utilisation version alone refreshes utilisation, not the fleet.
	gets := util.gets
	util.mu.Lock()
	util.version++
	util.mu.Unlock()
	d.passMu.Lock()
	d.shared(d.now())
	d.passMu.Unlock()
	if util.gets == gets || f.builds.Load() != 2 {
		t.Fatalf("after a utilisation version: gets %d->%d, builds %d", gets, util.gets, f.builds.Load())
	}
}

// TestSnapshotRebuildsNoMoreOftenThanTenBuildTimes: a fleet whose listing
// is slow is rebuilt at most every ten listing times.
func TestSnapshotRebuildsNoMoreOftenThanTenBuildTimes(t *testing.T) {
	f := &versionedFleet{}
	f.set(schedtest.Pool("pool-0").Slots(4, 4).Obj())
	d, clock := newSnapshotDispatcher(t, f, &countingUtil{})
	d.passMu.Lock()
	defer d.passMu.Unlock()
	d.shared(d.now())
	d.snap.buildCost = time.Second // as if listing the fleet took 1 s
	f.version.Add(1)
	clock.Advance(5 * time.Second)
	d.shared(d.now())
	if f.builds.Load() != 1 {
		t.Fatal("rebuilt 5 s after a 1 s build")
	}
	clock.Advance(5 * time.Second)
	d.shared(d.now())
	if f.builds.Load() != 2 {
		t.Fatal("not rebuilt 10 s after a 1 s build")
	}
}

// TestForeignLoadIsPerReplica: the load a replica's engine reported beyond
// this control plane's tasks counts on that replica, not on its siblings;
// the next task goes to the free sibling.
func TestForeignLoadIsPerReplica(t *testing.T) {
	f := &versionedFleet{}
	d, clock := newSnapshotDispatcher(t, f, &countingUtil{})
	busy := schedtest.Pool("pool-0").Replica("r0").Slots(2, 0).Obj() // its engine reports 2 busy, none ours
	busy.Pool.SlotsObservedAt = clock.Now()
	f.set(busy, schedtest.Pool("pool-0").Replica("r1").Slots(2, 2).Obj())
	f.version.Add(1)
	// Placement dates the reports as it builds its snapshot.
	if p := place(t, d, "a"); p.Key() != "n1/pool-0/r1" {
		t.Errorf("placed on %s, want the free replica r1", p.Key())
	}
	dec, err := d.Explain(scheduler.Request{Mode: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	foreign := map[string]int{}
	for _, r := range dec.Ranked {
		foreign[r.Candidate.Key()] = r.Candidate.Foreign
	}
	if foreign["n1/pool-0/r0"] != 2 || foreign["n1/pool-0/r1"] != 0 {
		t.Errorf("foreign load %v, want 2 on r0 and none on r1", foreign)
	}
}

// peersFleet offers one pool whose slots another control plane's tasks
// (Peers) may hold, as RegistryFleet does with --registry etcd.
type peersFleet struct {
	versionedFleet
	peers atomic.Int64
}

func (f *peersFleet) Candidates() []scheduler.Candidate {
	cands := f.versionedFleet.Candidates()
	for i := range cands {
		cands[i].Peers = int(f.peers.Load())
		cands[i].Foreign = cands[i].Peers
	}
	return cands
}

// TestPeersTakeSlots: the tasks other control planes have in flight on a
// pool take its slots here too, whether this control plane used the pool
// before (its book overlays the candidate) or not, and their end frees
// them.
func TestPeersTakeSlots(t *testing.T) {
	for _, usedBefore := range []bool{false, true} {
		f := &peersFleet{}
		f.set(schedtest.Pool("pool-0").Slots(2, 2).Obj())
		clock := clocktest.New(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
		d, err := New(Options{Fleet: f, Queue: admission.New(16, admission.Reject), Logger: quiet,
			Scheduling: scheduler.Options{StaleAfter: time.Minute, Quarantine: time.Minute}, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if usedBefore {
			d.Release(place(t, d, "earlier"), "", Succeeded, Observation{})
			// The engines report load beyond ours while the peers' tasks
			// arrive; the report ages out, and its ageing must not drop
			// the peers' tasks.
			clock.Advance(2 * time.Second)
			busy := schedtest.Pool("pool-0").Slots(2, 1).Obj()
			busy.Pool.SlotsObservedAt = clock.Now()
			f.set(busy)
			f.peers.Store(2)
			f.version.Add(1)
			snapshot := func() scheduler.Candidate {
				d.passMu.Lock()
				defer d.passMu.Unlock()
				return d.shared(clock.Now())[0]
			}
			clock.Advance(time.Second)
			if c := snapshot(); c.Foreign != 2 {
				t.Fatalf("peers 2, engines 1 beyond ours: foreign %d, want 2", c.Foreign)
			}
			clock.Advance(time.Minute)
			if c := snapshot(); c.Foreign != 2 {
				t.Fatalf("the engines' report aged out: foreign %d, want the peers' 2", c.Foreign)
			}
		} else {
			f.peers.Store(2)
			f.version.Add(1)
			clock.Advance(time.Second)
		}
		j := NewJob("b", admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
		if _, _, e := d.Submit(j); e != nil {
			t.Fatal(e)
		}
		if d.opts.Queue.Position("b") < 0 {
			t.Fatalf("used before %v: placed on slots another control plane holds", usedBefore)
		}
		f.peers.Store(1)
		f.version.Add(1)
		clock.Advance(time.Second)
		d.pass()
		if _, e, err := j.Wait(context.Background()); err != nil || e != nil {
			t.Fatalf("used before %v: not placed once a peer's task ended: %v %v", usedBefore, e, err)
		}
	}
}
