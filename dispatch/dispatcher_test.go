package dispatch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

const (
	interactive = admission.Interactive
	batch       = admission.Batch
)

func auto(model string) scheduler.Request {
	return scheduler.Request{Model: model, Mode: "auto", AllowFallback: true}
}

func TestSubmitOnAnInfeasibleFleet(t *testing.T) {
	served := schedtest.Pool("pool-0").Models("m").Obj()
	notReady := schedtest.Pool("pool-1").Models("m").NotReady().Obj()
	for _, tc := range []struct {
		name  string
		fleet []scheduler.Candidate
		req   scheduler.Request
		code  string
	}{
		{"empty fleet, model asked", nil, auto("m"), api.CodeModelNotAvailable},
		{"empty fleet, any model", nil, auto(""), api.CodePoolUnavailable},
		{"model nobody serves", []scheduler.Candidate{served}, auto("other"), api.CodeModelNotAvailable},
		{"model only on a pool not ready", []scheduler.Candidate{notReady}, auto("m"), api.CodeModelNotAvailable},
		{"pin to a missing pool", []scheduler.Candidate{served},
			scheduler.Request{Model: "m", Mode: "pin", PinPoolID: "pool-9"}, api.CodePoolUnavailable},
		{"every pool avoided", []scheduler.Candidate{served},
			scheduler.Request{Model: "m", Mode: "auto", AvoidPools: []string{"n1/pool-0"}}, api.CodePoolUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newFleet(tc.fleet...))
			_, _, e := h.d.Submit(NewJob("j", interactive, tc.req, time.Time{}))
			if e == nil || e.Code != tc.code {
				t.Fatalf("Submit = %v, want %s", e, tc.code)
			}
			if !e.Retriable || e.RetryAfterMS <= 0 {
				t.Errorf("%s: retriable=%v retry_after_ms=%d, want retriable with a delay", e.Code, e.Retriable, e.RetryAfterMS)
			}
			if h.queue.Len(interactive) != 0 {
				t.Error("a refused job was queued")
			}
			if got := testutil.ToFloat64(h.m.decisions.WithLabelValues("unavailable")); got != 1 {
				t.Errorf("decisions{unavailable} = %v, want 1", got)
			}
		})
	}
}

func TestSubmitDeadlineUnmeetable(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Models("m").Obj()))
	// Already past.
	_, _, e := h.d.Submit(NewJob("late", interactive, auto("m"), time.Now().Add(-time.Millisecond)))
	if e == nil || e.Code != api.CodeDeadlineUnmet {
		t.Fatalf("past deadline: %v, want DEADLINE_UNMET", e)
	}
	// 1-second tasks (50 tokens at the prior 50 tokens/s) on one slot:
	// one running, three queued. The fourth waits for all of them, about
	// 4 s: past a 1 s deadline, before a 1 min one.
	req := auto("m")
	req.MaxTokens = 50
	for _, id := range []string{"a", "b", "c", "d"} {
		h.submit(t, id, interactive, req)
	}
	h.d.pass() // counts the queued jobs as waiting for the pool
	_, predicted, e := h.d.Submit(NewJob("short", interactive, req, time.Now().Add(time.Second)))
	if e == nil || e.Code != api.CodeDeadlineUnmet {
		t.Fatalf("deadline before the predicted start: %v (predicted %v), want DEADLINE_UNMET", e, predicted)
	}
	pos, predicted, e := h.d.Submit(NewJob("long", interactive, req, time.Now().Add(time.Minute)))
	if e != nil {
		t.Fatalf("deadline after the predicted start: %v", e)
	}
	if pos != 3 || predicted < 3900*time.Millisecond || predicted > 4100*time.Millisecond {
		t.Errorf("position %d predicted %v, want 3 and about 4s", pos, predicted)
	}
}

func TestQueueFullRejects(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()), withQueue(1, admission.Reject))
	h.submit(t, "running", batch, auto(""))
	h.submit(t, "first", batch, auto(""))
	_, _, e := h.d.Submit(NewJob("second", interactive, auto(""), time.Time{}))
	if e == nil || e.Code != api.CodeAdmissionReject {
		t.Fatalf("Submit on a full queue = %v, want ADMISSION_REJECT", e)
	}
	if !e.Retriable || e.RetryAfterMS <= 0 || e.PolicyLabel != string(admission.Reject) {
		t.Errorf("rejection %+v: want retriable, retry_after_ms > 0, policy_label reject", *e)
	}
	if got := testutil.ToFloat64(h.m.admissions.WithLabelValues("rejected")); got != 1 {
		t.Errorf("admissions{rejected} = %v, want 1", got)
	}
}

func TestDropLRUEvictsTheOldestBatchJob(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()), withQueue(2, admission.DropLRU))
	h.submit(t, "running", batch, auto(""))
	oldest := h.submit(t, "batch-old", batch, auto(""))
	h.submit(t, "batch-new", batch, auto(""))
	h.submit(t, "interactive", interactive, auto(""))

	e := waitFailed(t, oldest)
	if e.Code != api.CodeQueueFullDropLRU || !e.Retriable || e.RetryAfterMS <= 0 || e.PolicyLabel != string(admission.DropLRU) {
		t.Errorf("evicted job got %+v, want QUEUE_FULL_DROP_LRU retriable with policy_label drop-lru", *e)
	}
	var ids []string
	for _, it := range h.queue.Items() {
		ids = append(ids, it.ID)
	}
	if want := []string{"interactive", "batch-new"}; !slices.Equal(ids, want) {
		t.Errorf("queue = %v, want %v", ids, want)
	}
	// Full of interactive work, nothing can be dropped.
	h.d.Cancel("batch-new")
	h.submit(t, "interactive-2", interactive, auto(""))
	// The refusal names the policy in force, drop-lru, though it could
	// drop nothing.
	if _, _, e := h.d.Submit(NewJob("interactive-3", interactive, auto(""), time.Time{})); e == nil || e.Code != api.CodeAdmissionReject ||
		e.PolicyLabel != string(admission.DropLRU) {
		t.Errorf("full of interactive jobs: %+v, want ADMISSION_REJECT with policy_label drop-lru", e)
	}
}

func TestPlacementHonoursFreeSlots(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()))
	h.run(t)
	first := h.submit(t, "first", interactive, auto(""))
	p1 := waitPlaced(t, first)
	if p1.Key() != "n1/pool-0" {
		t.Fatalf("placed on %s", p1.Key())
	}
	second := h.submit(t, "second", interactive, auto(""))
	h.notPlaced(t, second)
	if h.inflight("n1/pool-0") != 1 {
		t.Errorf("in flight = %d, want 1", h.inflight("n1/pool-0"))
	}
	h.d.Release(p1, "", Succeeded, Observation{})
	p2 := waitPlaced(t, second)
	if p2.Key() != "n1/pool-0" || p2.Waited <= 0 {
		t.Errorf("second placed on %s after %v", p2.Key(), p2.Waited)
	}
	h.d.Release(p2, "", Succeeded, Observation{})
	if n := h.inflight("n1/pool-0"); n != 0 {
		t.Errorf("in flight after both released = %d", n)
	}
}

func TestInteractiveBeforeBatch(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()))
	h.run(t)
	p0 := waitPlaced(t, h.submit(t, "holder", interactive, auto("")))
	b := h.submit(t, "batch", batch, auto(""))
	i := h.submit(t, "interactive", interactive, auto(""))
	h.notPlaced(t, b)
	h.d.Release(p0, "", Succeeded, Observation{})
	pi := waitPlaced(t, i)
	h.notPlaced(t, b)
	h.d.Release(pi, "", Succeeded, Observation{})
	waitPlaced(t, b)
}

func TestInFlightCorrectionWithinOnePass(t *testing.T) {
	t.Run("one slot", func(t *testing.T) {
		h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()))
		a := h.submit(t, "a", interactive, auto(""))
		b := h.submit(t, "b", interactive, auto(""))
		h.d.pass()
		_, aok := placedNow(a)
		_, bok := placedNow(b)
		if !aok || bok {
			t.Fatalf("one pass on a 1-slot pool placed a=%v b=%v, want only a", aok, bok)
		}
		if h.queue.Position("b") != 0 {
			t.Errorf("b is not queued")
		}
	})
	t.Run("two pools of one slot", func(t *testing.T) {
		h := newHarness(t, newFleet(schedtest.Pool("pool-a").Obj(), schedtest.Pool("pool-b").Obj()))
		jobs := []*Job{h.submit(t, "a", interactive, auto("")), h.submit(t, "b", interactive, auto("")), h.submit(t, "c", interactive, auto(""))}
		h.d.pass()
		var keys []string
		for _, j := range jobs[:2] {
			p, ok := placedNow(j)
			if !ok {
				t.Fatalf("%s not placed", j.ID)
			}
			keys = append(keys, p.Key())
		}
		if keys[0] == keys[1] {
			t.Errorf("both jobs landed on %s", keys[0])
		}
		if _, ok := placedNow(jobs[2]); ok {
			t.Error("a third job was placed on two 1-slot pools")
		}
	})
}

func TestEngineFailureQuarantinesThePool(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-a").Obj(), schedtest.Pool("pool-b").Obj()))
	h.run(t)
	p1 := waitPlaced(t, h.submit(t, "first", interactive, auto("")))
	if p1.Key() != "n1/pool-a" {
		t.Fatalf("first job on %s, want the tie-break's n1/pool-a", p1.Key())
	}
	h.d.Release(p1, "", EngineFailed, Observation{})
	p2 := waitPlaced(t, h.submit(t, "second", interactive, auto("")))
	if p2.Key() != "n1/pool-b" {
		t.Errorf("after pool-a failed, the next job went to %s", p2.Key())
	}
	// pool-a is quarantined, pool-b busy with the second job.
	dec, err := h.d.Explain(auto(""))
	if err != nil || len(dec.Ranked) != 1 || dec.Ranked[0].Candidate.HasRoom(0) {
		t.Fatalf("explain: %v, want busy pool-b alone", err)
	}
	found := false
	for _, r := range dec.Rejected {
		if r.Candidate.Key() == "n1/pool-a" {
			found = r.Plugin == scheduler.QuarantineName
		}
	}
	if !found {
		t.Errorf("explain does not show pool-a quarantined: %+v", dec.Rejected)
	}
	// A success ends the quarantine at once.
	h.d.Release(p2, "", Succeeded, Observation{})
	h.d.Release(Placement{Candidate: schedtest.Pool("pool-a").Obj()}, "", Succeeded, Observation{})
	h.d.mu.Lock()
	still := !h.d.books["n1/pool-a"].failure.IsZero()
	h.d.mu.Unlock()
	if still {
		t.Error("a success did not lift the quarantine")
	}
}

func TestSessionAffinity(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-a").Slots(2, 2).Obj(), schedtest.Pool("pool-b").Slots(2, 2).Obj()))
	h.run(t)
	pin := scheduler.Request{SessionID: "s1", Mode: "pin", PinPoolID: "pool-b"}
	p1 := waitPlaced(t, h.submit(t, "pinned", interactive, pin))
	if p1.Key() != "n1/pool-b" {
		t.Fatalf("pinned job on %s", p1.Key())
	}
	h.d.Release(p1, "s1", Succeeded, Observation{})

	// Both pools have two free slots; the tie-break would pick pool-a.
	req := auto("")
	req.SessionID = "s1"
	p2 := waitPlaced(t, h.submit(t, "same-session", interactive, req))
	if p2.Key() != "n1/pool-b" {
		t.Errorf("session s1's next job went to %s, want its pool n1/pool-b", p2.Key())
	}
	h.d.Release(p2, "s1", Abandoned, Observation{})
	p3 := waitPlaced(t, h.submit(t, "no-session", interactive, auto("")))
	if p3.Key() != "n1/pool-a" {
		t.Errorf("a job without session went to %s, want the tie-break's n1/pool-a", p3.Key())
	}
}

func TestRetryAvoidsTheFailedPool(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-a").Obj(), schedtest.Pool("pool-b").Obj()))
	h.run(t)
	j := h.submit(t, "j", interactive, auto(""))
	p1 := waitPlaced(t, j)
	if p1.Key() != "n1/pool-a" {
		t.Fatalf("first placement on %s", p1.Key())
	}
	// Abandoned: no quarantine; only the job's own avoid list keeps it off.
	h.d.Release(p1, "", Abandoned, Observation{})
	if !h.d.Retry(j, p1) {
		t.Fatal("Retry = false with pool-b there")
	}
	p2 := waitPlaced(t, j)
	if p2.Key() != "n1/pool-b" {
		t.Errorf("retry placed on %s, want n1/pool-b", p2.Key())
	}
	if !slices.Contains(j.Req.AvoidPools, "n1/pool-a") {
		t.Errorf("avoid pools %v", j.Req.AvoidPools)
	}
	// Another job is free to use pool-a.
	p3 := waitPlaced(t, h.submit(t, "other", interactive, auto("")))
	if p3.Key() != "n1/pool-a" {
		t.Errorf("another job went to %s", p3.Key())
	}
}

func TestCancelRemovesAQueuedJob(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Obj()))
	h.run(t)
	p1 := waitPlaced(t, h.submit(t, "holder", interactive, auto("")))
	queued := h.submit(t, "queued", interactive, auto(""))
	if !h.d.Cancel("queued") {
		t.Fatal("Cancel of a queued job = false")
	}
	if h.d.Cancel("queued") {
		t.Error("second Cancel = true")
	}
	if h.d.Cancel("holder") {
		t.Error("Cancel of a placed job = true")
	}
	if n := h.queue.Len(interactive); n != 0 {
		t.Errorf("queue depth %d after cancel", n)
	}
	h.d.Release(p1, "", Succeeded, Observation{})
	h.notPlaced(t, queued)
	waitPlaced(t, h.submit(t, "next", interactive, auto("")))
}

func TestModelDisappearsWhileQueued(t *testing.T) {
	fleet := newFleet(schedtest.Pool("pool-0").Models("m").Obj())
	h := newHarness(t, fleet)
	h.run(t)
	waitPlaced(t, h.submit(t, "holder", interactive, auto("m")))
	queued := h.submit(t, "queued", interactive, auto("m"))
	h.notPlaced(t, queued) // merely waiting for a slot: no failure
	fleet.set(schedtest.Pool("pool-0").Models("other").Obj())
	begin := time.Now()
	e := waitFailed(t, queued)
	if e.Code != api.CodeModelNotAvailable {
		t.Errorf("got %v, want MODEL_NOT_AVAILABLE", e)
	}
	if waited := time.Since(begin); waited < 50*time.Millisecond {
		t.Errorf("failed after %v, before Unplaceable (50ms)", waited)
	}
	if h.queue.Len(interactive) != 0 {
		t.Error("the failed job is still queued")
	}
}

func TestDeadlinePassesWhileQueued(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Obj()))
	h.run(t)
	// Short tasks: the predicted start (about 20 ms) is within the
	// deadline, but the holder never ends.
	short := auto("")
	short.MaxTokens = 1
	waitPlaced(t, h.submit(t, "holder", interactive, short))
	j := NewJob("hurried", interactive, short, time.Now().Add(100*time.Millisecond))
	if _, _, e := h.d.Submit(j); e != nil {
		t.Fatal(e)
	}
	if e := waitFailed(t, j); e.Code != api.CodeDeadlineUnmet {
		t.Errorf("got %v, want DEADLINE_UNMET", e)
	}
	if got := testutil.ToFloat64(h.m.decisions.WithLabelValues("deadline")); got != 1 {
		t.Errorf("decisions{deadline} = %v", got)
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	j := NewJob("j", interactive, auto(""), time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, e, err := j.Wait(ctx); err == nil || e != nil {
		t.Errorf("Wait on a cancelled context = %v, %v", e, err)
	}
}

func TestDispatchMetrics(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Models("m").Obj()))
	h.submit(t, "i1", interactive, auto("m"))
	h.submit(t, "i2", interactive, auto("m"))
	h.submit(t, "b1", batch, auto("m"))
	h.d.pass()
	if _, _, e := h.d.Submit(NewJob("lost", interactive, auto("nope"), time.Time{})); e == nil {
		t.Fatal("a job for an unknown model was admitted")
	}
	want := `
# HELP llorch_admission_queue_depth Tasks waiting for a pool, by priority.
# TYPE llorch_admission_queue_depth gauge
llorch_admission_queue_depth{priority="batch"} 1
llorch_admission_queue_depth{priority="interactive"} 1
# HELP llorch_placement_decisions_total Placement outcomes: placed, unavailable (no pool could take the task), deadline.
# TYPE llorch_placement_decisions_total counter
llorch_placement_decisions_total{outcome="deadline"} 0
llorch_placement_decisions_total{outcome="placed"} 1
llorch_placement_decisions_total{outcome="unavailable"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "llorch_admission_queue_depth", "llorch_placement_decisions_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h.m.placement); n != 1 {
		t.Errorf("placement latency histogram: %d series", n)
	}
	if got := testutil.ToFloat64(h.m.admissions.WithLabelValues("admitted")); got != 3 {
		t.Errorf("admissions{admitted} = %v, want 3", got)
	}
}

// A job placed by a concurrent pass before Submit returns is first in
// line: its position is 0, never -1.
func TestSubmitPositionIsNeverNegative(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1<<20, 1<<20).Obj()), withQueue(1<<20, admission.Reject))
	h.run(t)
	for i := range 2000 {
		pos, _, e := h.d.Submit(NewJob(fmt.Sprint(i), interactive, auto(""), time.Time{}))
		if e != nil {
			t.Fatal(e)
		}
		if pos < 0 {
			t.Fatalf("job %d: queue position %d", i, pos)
		}
	}
}

// With no other pool, Retry queues nothing: the caller fails the task at
// once instead of it waiting for a pool that is not there.
func TestRetryWithoutAnotherPool(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Obj()))
	h.run(t)
	j := h.submit(t, "j", interactive, auto(""))
	p := waitPlaced(t, j)
	h.d.Release(p, "", EngineFailed, Observation{})
	if h.d.Retry(j, p) {
		t.Fatal("Retry = true on a one-pool fleet")
	}
	if h.queue.Len(interactive) != 0 {
		t.Error("Retry queued the job")
	}
}

func TestSubmitPlacesAtOnceWhenNothingWaits(t *testing.T) {
	h := newHarness(t, newFleet(schedtest.Pool("pool-0").Slots(1, 1).Obj()))
	// The dispatcher's Run loop is not running: only the fast path can
	// place this job.
	j := NewJob("now", interactive, auto(""), time.Time{})
	if pos, _, e := h.d.Submit(j); e != nil || pos != 0 {
		t.Fatalf("Submit = %d, %v", pos, e)
	}
	p, e, err := j.Wait(context.Background())
	if err != nil || e != nil || p.Key() != "n1/pool-0" {
		t.Fatalf("fast path: %+v %v %v", p, e, err)
	}
	// The slot is now taken: the next job queues.
	k := NewJob("next", interactive, auto(""), time.Time{})
	if _, _, e := h.d.Submit(k); e != nil {
		t.Fatal(e)
	}
	if h.queue.Position("next") != 0 {
		t.Fatal("with the only slot taken, the next job must queue")
	}
}

// TestReplicasHaveTheirOwnBooks: a pool's replicas are candidates of their
// own: in-flight counts, quarantine and avoid lists are per replica; the
// exported books sum them per pool.
func TestReplicasHaveTheirOwnBooks(t *testing.T) {
	r0 := schedtest.Pool("pool-0").Replica("r0").Slots(1, 1).Obj()
	r1 := schedtest.Pool("pool-0").Replica("r1").Slots(1, 1).Obj()
	h := newHarness(t, newFleet(r0, r1))
	h.run(t)

	a := waitPlaced(t, h.submit(t, "a", interactive, auto("")))
	b := waitPlaced(t, h.submit(t, "b", interactive, auto("")))
	if a.Key() != "n1/pool-0/r0" || b.Key() != "n1/pool-0/r1" {
		t.Fatalf("placed on %s and %s, want one on each replica", a.Key(), b.Key())
	}
	if h.inflight("n1/pool-0/r0") != 1 || h.inflight("n1/pool-0/r1") != 1 || h.inflight("n1/pool-0") != 0 {
		t.Errorf("books: r0 %d, r1 %d, pool %d; want 1, 1, none", h.inflight("n1/pool-0/r0"), h.inflight("n1/pool-0/r1"), h.inflight("n1/pool-0"))
	}
	c := h.submit(t, "c", interactive, auto(""))
	h.notPlaced(t, c) // both replicas' one slot is taken
	want := `
# HELP llorch_placement_pool_in_flight Tasks this control plane has sent to the pool and not yet seen end (exact, not a report).
# TYPE llorch_placement_pool_in_flight gauge
llorch_placement_pool_in_flight{node_id="n1",pool_id="pool-0"} 2
`
	if err := testutil.CollectAndCompare(h.d, strings.NewReader(want), "llorch_placement_pool_in_flight"); err != nil {
		t.Error(err)
	}

	// r0's engine fails: r0 is quarantined, r1 is not; c waits for r1.
	h.d.Release(a, "", EngineFailed, Observation{})
	h.notPlaced(t, c)
	h.d.Release(b, "", Succeeded, Observation{})
	pc := waitPlaced(t, c)
	if pc.Key() != "n1/pool-0/r1" {
		t.Errorf("after r0 failed, c went to %s", pc.Key())
	}
	dec, err := h.d.Explain(auto(""))
	if err != nil {
		t.Fatal(err)
	}
	if len(dec.Rejected) != 1 || dec.Rejected[0].Candidate.Key() != "n1/pool-0/r0" || dec.Rejected[0].Plugin != scheduler.QuarantineName {
		t.Errorf("explain rejects %+v, want r0 quarantined alone", dec.Rejected)
	}
	h.d.Release(pc, "", Succeeded, Observation{})

	// A retry avoids the replica that failed it, not its sibling.
	h.d.Release(Placement{Candidate: r0}, "", Succeeded, Observation{}) // lifts r0's quarantine
	j := h.submit(t, "j", interactive, auto(""))
	pj := waitPlaced(t, j)
	h.d.Release(pj, "", Abandoned, Observation{})
	if !h.d.Retry(j, pj) {
		t.Fatal("Retry = false with a sibling replica there")
	}
	if again := waitPlaced(t, j); again.Key() == pj.Key() || again.Candidate.Pool.PoolID != "pool-0" {
		t.Errorf("retry of %s placed on %s, want the other replica", pj.Key(), again.Key())
	} else {
		h.d.Release(again, "", Succeeded, Observation{})
	}

	// Avoiding the pool by id or key avoids every replica.
	for _, avoid := range []string{"pool-0", "n1/pool-0"} {
		_, _, e := h.d.Submit(NewJob("avoid-"+avoid, interactive, scheduler.Request{Mode: "auto", AvoidPools: []string{avoid}}, time.Time{}))
		if e == nil || e.Code != api.CodePoolUnavailable {
			t.Errorf("avoid %s: %v, want POOL_UNAVAILABLE", avoid, e)
		}
	}
}

// TestSaturatedPassesDoNotRescoreTheQueue: while every pool is full and
// the fleet unchanged, a pass leaves queued jobs where they wait instead
// of scoring each again; when a slot frees, the head of the queue is
// placed, in order.
func TestSaturatedPassesDoNotRescoreTheQueue(t *testing.T) {
	f := &versionedFleet{}
	f.set(schedtest.Pool("pool-0").Slots(2, 2).Obj())
	reg := prometheus.NewRegistry()
	d, err := New(Options{Fleet: f, Queue: admission.New(64, admission.Reject), Logger: quiet, Metrics: NewMetrics(reg),
		Scheduling: scheduler.Options{StaleAfter: time.Minute, Quarantine: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	holders := []Placement{place(t, d, "h1"), place(t, d, "h2")}
	var queued []*Job
	for i := range 50 {
		j := NewJob(fmt.Sprintf("q%d", i), admission.Interactive, scheduler.Request{Mode: "auto", AllowFallback: true}, time.Time{})
		if _, _, e := d.Submit(j); e != nil {
			t.Fatal(e)
		}
		queued = append(queued, j)
	}
	scored := func() uint64 {
		mf, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range mf {
			if f.GetName() == "llorch_placement_duration_seconds" {
				return f.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		return 0
	}
	d.pass() // scores each queued job once: they wait for pool-0
	before := scored()
	for range 10 {
		d.pass()
	}
	if n := scored() - before; n != 0 {
		t.Errorf("10 passes over a saturated fleet scored %d jobs, want 0", n)
	}
	if w := d.snap.cands[0].Waiting; w != 50 {
		t.Errorf("pool-0 counts %d jobs waiting for it, want 50", w)
	}
	placedNow := func(j *Job) (Placement, bool) {
		select {
		case p := <-j.placed:
			return p, true
		default:
			return Placement{}, false
		}
	}
	d.Release(holders[0], "", Succeeded, Observation{})
	d.pass()
	got, ok := placedNow(queued[0])
	if !ok {
		t.Fatal("a slot freed, but the head of the queue was not placed")
	}
	if _, ok := placedNow(queued[1]); ok {
		t.Fatal("the second queued job was placed on no free slot")
	}
	d.Release(got, "", Succeeded, Observation{})
	d.pass()
	if _, ok := placedNow(queued[1]); !ok {
		t.Fatal("the second queued job was not placed when the next slot freed")
	}
}
