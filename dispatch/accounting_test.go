package dispatch

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

func TestLoadHistoryPeak(t *testing.T) {
	type change struct {
		bucket int64
		n      int
	}
	for _, tc := range []struct {
		name     string
		changes  []change
		from, to int64
		want     int
		known    bool
	}{
		{"never dispatched", nil, 5, 7, 0, true},
		{"the count held since the last change", []change{{10, 3}}, 20, 22, 3, true},
		{"a peak inside the range", []change{{10, 1}, {20, 4}, {21, 2}}, 19, 22, 4, true},
		{"a peak and fall within one bucket", []change{{10, 1}, {20, 4}, {20, 1}}, 20, 20, 4, true},
		{"before the peak", []change{{10, 1}, {20, 4}, {21, 0}}, 15, 19, 1, true},
		{"after the fall", []change{{10, 1}, {20, 4}, {21, 0}}, 22, 30, 0, true},
		{"a range ending before the last change", []change{{10, 2}, {50, 7}}, 30, 40, 2, true},
		{"older than the history", []change{{10, 2}, {10 + historyLen + 5, 0}}, 12, 14, 0, false},
		{"a gap longer than the history", []change{{10, 2}, {10 + 3*historyLen, 5}}, 10 + 3*historyLen - 5, 10 + 3*historyLen - 1, 2, true},
		{"before the epoch nothing ran", []change{{10, 2}}, -3, -1, 0, true},
		{"a range from before the epoch", []change{{0, 2}}, -1, 1, 2, true},
		{"a clock step back counts as now", []change{{30, 2}, {25, 6}}, 30, 30, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newLoadHistory()
			for _, c := range tc.changes {
				h.record(c.bucket, c.n)
			}
			got, known := h.peakOver(tc.from, tc.to)
			if known != tc.known || (known && got != tc.want) {
				t.Errorf("peakOver(%d, %d) = %d, %v; want %d, %v", tc.from, tc.to, got, known, tc.want, tc.known)
			}
		})
	}
}

func TestSpeedLearner(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	t.Run("engine timings", func(t *testing.T) {
		var l speedLearner
		l.observe(Observation{Sent: at(0), FirstByte: at(30), End: at(330), Tokens: 31, DecodeTime: 300 * time.Millisecond,
			PromptTokens: 100, PromptTime: 10 * time.Millisecond}, false)
		s := l.speed()
		if s.Samples != 1 || math.Abs(s.DecodeTPS-31/0.3) > 1e-6 || math.Abs(s.PrefillTPS-10000) > 1e-6 ||
			s.FirstToken != 20*time.Millisecond || s.Service != 330*time.Millisecond {
			t.Errorf("speed %+v", s)
		}
	})
	t.Run("wall clock when the engine gave no timings", func(t *testing.T) {
		var l speedLearner
		l.observe(Observation{Sent: at(0), FirstByte: at(10), End: at(110), Tokens: 11}, false)
		if s := l.speed(); math.Abs(s.DecodeTPS-100) > 1e-6 || s.PrefillTPS != 0 || s.FirstToken != 10*time.Millisecond {
			t.Errorf("speed %+v", s)
		}
	})
	t.Run("a task queued in the engine says nothing of its first token", func(t *testing.T) {
		var l speedLearner
		l.observe(Observation{Sent: at(0), FirstByte: at(500), End: at(600), Tokens: 11}, true)
		if s := l.speed(); s.FirstToken != 0 || s.Service != 600*time.Millisecond {
			t.Errorf("speed %+v", s)
		}
	})
	t.Run("moves towards a slower pool", func(t *testing.T) {
		var l speedLearner
		for range 5 {
			l.observe(Observation{Sent: at(0), End: at(100), Tokens: 10, DecodeTime: 100 * time.Millisecond}, false)
		}
		for range 30 {
			l.observe(Observation{Sent: at(0), End: at(500), Tokens: 10, DecodeTime: 500 * time.Millisecond}, false)
		}
		// 80 tokens/s off at first, 4 % of it left after 30 tasks.
		if s := l.speed(); s.DecodeTPS > 24 || s.DecodeTPS < 20 || s.Service < 480*time.Millisecond {
			t.Errorf("after 30 slow tasks: %+v, want about 20 tokens/s", s)
		}
	})
	t.Run("nonsense is ignored", func(t *testing.T) {
		var l speedLearner
		l.observe(Observation{}, false)
		l.observe(Observation{Sent: at(100), End: at(0)}, false)
		if l.samples != 0 {
			t.Errorf("learned from nonsense: %+v", l)
		}
	})
}

// accountingHarness is a dispatcher on a fake clock over one pool of four
// slots whose heartbeats the test writes.
type accountingHarness struct {
	*harness
	t     *testing.T
	clock *clocktest.Clock
	fleet *versionedFleet
}

func newAccountingHarness(t *testing.T, slots int) *accountingHarness {
	t.Helper()
	clock := clocktest.New(time.Time{})
	fleet := &versionedFleet{}
	fleet.set(schedtest.Pool("pool-0").Slots(slots, slots).Obj())
	h := newHarness(t, nil, withClock(clock), func(o *Options) { o.Fleet = fleet })
	return &accountingHarness{harness: h, t: t, clock: clock, fleet: fleet}
}

// report is a heartbeat: the engine's busy and deferred counts, polled at
// observed; the snapshot sees it on its next rebuild.
func (h *accountingHarness) report(busy, deferred int, observed time.Time) {
	c := schedtest.Pool("pool-0").Slots(4, 4-busy).Obj()
	c.Pool.RequestsDeferred, c.Pool.SlotsObservedAt = deferred, observed
	h.fleet.set(c)
	h.fleet.version.Add(1)
	h.clock.Advance(rebuildEvery) // let the snapshot rebuild
}

// learn teaches the dispatcher that the pool's tasks take service.
func (h *accountingHarness) learn(service time.Duration) {
	p := h.placeOne(h.t, "teacher")
	sent := h.clock.Now()
	h.d.Release(p, "", Succeeded, Observation{Sent: sent, FirstByte: sent.Add(time.Millisecond), End: sent.Add(service), Tokens: 10})
}

// candidate is the pool as the next decision sees it.
func (h *accountingHarness) candidate() scheduler.Candidate {
	h.d.passMu.Lock()
	defer h.d.unlockPass()
	return h.d.shared(h.d.now())[0]
}

func (h *accountingHarness) placeOne(t *testing.T, id string) Placement {
	t.Helper()
	j := h.submit(t, id, admission.Interactive, auto(""))
	p, ok := placedNow(j)
	if !ok {
		t.Fatalf("%s not placed at once", id)
	}
	return p
}

// Every interleaving of a report with this control plane's own dispatches
// and releases: only load beyond ours, at the moment the engine was
// polled, is foreign, and it ages out.
func TestExactSlotAccounting(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run drives the harness and returns what the pool should show.
		run                   func(t *testing.T, h *accountingHarness) (inflight, foreign int)
		wantFree, wantHasRoom int
	}{
		{"ours only, reported while running", func(t *testing.T, h *accountingHarness) (int, int) {
			h.placeOne(t, "a")
			h.placeOne(t, "b")
			h.report(2, 0, h.clock.Now())
			return 2, 0
		}, 2, 1},
		{"a stale report does not hold slots we gave back", func(t *testing.T, h *accountingHarness) (int, int) {
			a, b := h.placeOne(t, "a"), h.placeOne(t, "b")
			polled := h.clock.Advance(50 * time.Millisecond)
			h.clock.Advance(time.Second)
			h.d.Release(a, "", Succeeded, Observation{})
			h.d.Release(b, "", Succeeded, Observation{})
			h.report(2, 0, polled) // arrives after both ended
			return 0, 0
		}, 4, 1},
		{"load beyond ours is foreign", func(t *testing.T, h *accountingHarness) (int, int) {
			h.placeOne(t, "a")
			h.report(3, 0, h.clock.Now())
			return 1, 2
		}, 1, 1},
		{"deferred requests are load too", func(t *testing.T, h *accountingHarness) (int, int) {
			h.report(4, 2, h.clock.Now())
			return 0, 6
		}, 0, 0},
		{"a report polled before our dispatch", func(t *testing.T, h *accountingHarness) (int, int) {
			polled := h.clock.Now()
			h.clock.Advance(time.Second)
			h.placeOne(t, "a")
			h.placeOne(t, "b")
			h.report(1, 0, polled) // one foreign task then; ours came later
			return 2, 1
		}, 1, 1},
		{"a task that ended just before the poll still held its slot there", func(t *testing.T, h *accountingHarness) (int, int) {
			a := h.placeOne(t, "a")
			h.placeOne(t, "b")
			h.clock.Advance(time.Second)
			h.d.Release(a, "", Succeeded, Observation{})
			polled := h.clock.Advance(30 * time.Millisecond)
			h.report(2, 0, polled)
			return 1, 0
		}, 3, 1},
		{"a task sent just after the poll had not reached the engine", func(t *testing.T, h *accountingHarness) (int, int) {
			polled := h.clock.Now()
			h.clock.Advance(20 * time.Millisecond)
			h.placeOne(t, "a")
			h.report(0, 0, polled)
			return 1, 0
		}, 3, 1},
		{"foreign load ages out", func(t *testing.T, h *accountingHarness) (int, int) {
			// Never measured: 3 tasks on 4 slots, one round of 1 s, twice.
			h.report(3, 0, h.clock.Now())
			h.clock.Advance(1800 * time.Millisecond)
			if c := h.candidate(); c.Foreign != 3 {
				t.Errorf("foreign %d 1.9 s after the report, want 3", c.Foreign)
			}
			h.clock.Advance(200 * time.Millisecond)
			return 0, 0
		}, 4, 1},
		{"foreign load never outlives the TTL", func(t *testing.T, h *accountingHarness) (int, int) {
			h.report(4, 100, h.clock.Now()) // 26 rounds
			h.clock.Advance(14 * time.Second)
			if c := h.candidate(); c.Foreign != 104 {
				t.Errorf("foreign %d 14 s after the report, want 104", c.Foreign)
			}
			h.clock.Advance(time.Second)
			return 0, 0
		}, 4, 1},
		{"foreign load is counted until the pool has likely worked through it", func(t *testing.T, h *accountingHarness) (int, int) {
			h.learn(200 * time.Millisecond)
			h.clock.Advance(time.Second)
			// 6 tasks on 4 slots: two rounds of 200 ms, counted for 800 ms.
			h.report(4, 2, h.clock.Now())
			h.clock.Advance(600 * time.Millisecond)
			if c := h.candidate(); c.Foreign != 6 {
				t.Errorf("foreign %d 700 ms after the report, want 6", c.Foreign)
			}
			h.clock.Advance(200 * time.Millisecond)
			return 0, 0
		}, 4, 1},
		{"the same report read twice is dated once", func(t *testing.T, h *accountingHarness) (int, int) {
			polled := h.clock.Now()
			h.report(2, 0, polled) // two foreign tasks
			h.placeOne(t, "a")
			h.report(2, 0, polled) // same poll again: still two foreign, not one
			return 1, 2
		}, 1, 1},
		{"a report ages out from when the engine was polled, not received", func(t *testing.T, h *accountingHarness) (int, int) {
			polled := h.clock.Now()
			h.clock.Advance(1900 * time.Millisecond)
			h.report(3, 0, polled) // received 2 s after the poll: already done
			return 0, 0
		}, 4, 1},
		{"a newer report replaces the foreign load", func(t *testing.T, h *accountingHarness) (int, int) {
			h.report(3, 0, h.clock.Now())
			h.report(1, 0, h.clock.Now())
			return 0, 1
		}, 3, 1},
		{"a report older than its TTL is ignored", func(t *testing.T, h *accountingHarness) (int, int) {
			polled := h.clock.Now()
			h.placeOne(t, "a")
			h.clock.Advance(time.Minute)
			h.report(4, 0, polled)
			return 1, 0
		}, 3, 1},
		{"an undated report is not foreign load", func(t *testing.T, h *accountingHarness) (int, int) {
			h.report(4, 0, time.Time{})
			return 0, 0
		}, 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newAccountingHarness(t, 4)
			inflight, foreign := tc.run(t, h)
			c := h.candidate()
			if c.InFlight != inflight || c.Foreign != foreign || c.FreeSlots() != tc.wantFree || c.HasRoom(0) != (tc.wantHasRoom == 1) {
				t.Errorf("in flight %d, foreign %d, free %d, room %v; want %d, %d, %d, %v",
					c.InFlight, c.Foreign, c.FreeSlots(), c.HasRoom(0), inflight, foreign, tc.wantFree, tc.wantHasRoom == 1)
			}
		})
	}
}

// Giving a slot back places the next queued task at once: no tick, no
// heartbeat in between (the dispatcher's loop is not even running).
func TestReleasePlacesTheNextTaskAtOnce(t *testing.T) {
	h := newAccountingHarness(t, 1)
	a := h.placeOne(t, "a")
	next := h.submit(t, "next", admission.Interactive, auto(""))
	if _, ok := placedNow(next); ok {
		t.Fatal("placed on a busy slot")
	}
	h.d.Release(a, "", Succeeded, Observation{})
	p, ok := placedNow(next)
	if !ok {
		t.Fatal("the release did not place the queued task")
	}
	if p.Key() != "n1/pool-0" || h.inflight("n1/pool-0") != 1 {
		t.Errorf("placed on %s with %d in flight", p.Key(), h.inflight("n1/pool-0"))
	}
}

// A job waits for a fast pool rather than take a slow pool's free slot
// when waiting is quicker; when the fast pool's queue grows, the next job
// goes to the slow pool.
func TestWaitingForAFastPoolBeatsASlowFreeSlot(t *testing.T) {
	clock := clocktest.New(time.Time{})
	fast := schedtest.Pool("fast").Slots(1, 1).Obj()
	slow := schedtest.Pool("slow").Slots(1, 1).Obj()
	// The first token weighs as much as the rest of the answer.
	h := newHarness(t, newFleet(fast, slow), withClock(clock), func(o *Options) { o.TTFTWeight = 1 })
	// Teach the dispatcher the pools' speeds: 32 tokens in 64 ms on fast,
	// in 320 ms on slow.
	for _, p := range []struct {
		cand scheduler.Candidate
		ms   int
	}{{fast, 64}, {slow, 320}} {
		d := time.Duration(p.ms) * time.Millisecond
		sent := clock.Now()
		h.d.mu.Lock()
		h.d.book(p.cand.Key()).inflight++
		h.d.mu.Unlock()
		h.d.Release(Placement{Candidate: p.cand}, "", Succeeded, Observation{Sent: sent, FirstByte: sent.Add(2 * time.Millisecond),
			End: sent.Add(d), Tokens: 32, DecodeTime: d})
	}
	req := auto("")
	req.MaxTokens = 32
	first, ok := placedNow(h.submit(t, "first", admission.Interactive, req))
	if !ok || first.Key() != "n1/fast" {
		t.Fatalf("first job: %v on %s, want the fast pool", ok, first.Key())
	}
	if _, ok := placedNow(h.submit(t, "second", admission.Interactive, req)); ok {
		t.Fatal("the second job took the slow pool's slot instead of waiting ~64 ms for the fast one")
	}
	h.d.pass()
	var jobs []*Job
	onSlow := -1
	for i := 0; i < 6 && onSlow < 0; i++ {
		jobs = append(jobs, h.submit(t, fmt.Sprint("more-", i), admission.Interactive, req))
		h.d.pass()
		for k, j := range jobs {
			if p, ok := placedNow(j); ok {
				if p.Key() != "n1/slow" {
					t.Fatalf("%s placed on %s while the fast pool is busy", j.ID, p.Key())
				}
				onSlow = k
			}
		}
	}
	// Placement minimises time to first token plus latency (TTFTWeight 1). On fast, a
	// job behind n others (the running one included) waits 64 ms × n:
	// 2 × (64n + 2) + 62 ms. On slow, 2 × 2 + 310 ms. The second job
	// (n=1, 194 ms) waits for fast; for the next (n=2, 322 ms) the slow
	// pool is better.
	if onSlow != 0 {
		t.Fatalf("the job sent to the slow pool was more-%d, want more-0", onSlow)
	}
	// The fast pool frees: the job at the head of the queue takes it.
	h.d.Release(first, "", Succeeded, Observation{})
	if h.inflight("n1/fast") != 1 {
		t.Errorf("the fast pool's slot was not taken again at once")
	}
}

// The books are exported per pool: in flight exactly, foreign load while
// counted, speeds once measured.
func TestBooksExported(t *testing.T) {
	h := newAccountingHarness(t, 4)
	a := h.placeOne(t, "a")
	h.placeOne(t, "b")
	sent := h.clock.Now()
	h.d.Release(a, "", Succeeded, Observation{Sent: sent, FirstByte: sent.Add(10 * time.Millisecond), End: sent.Add(310 * time.Millisecond),
		Tokens: 31, DecodeTime: 300 * time.Millisecond})
	h.clock.Advance(time.Second)
	h.report(3, 0, h.clock.Now()) // one of ours, two foreign
	h.candidate()
	want := `
# HELP llorch_placement_pool_decode_tokens_per_second One slot's generation speed learned from the pool's completed tasks.
# TYPE llorch_placement_pool_decode_tokens_per_second gauge
llorch_placement_pool_decode_tokens_per_second{node_id="n1",pool_id="pool-0"} 103.33333333333334
# HELP llorch_placement_pool_foreign_load Load the pool's engines reported beyond this control plane's tasks (another client or replica), while it is counted.
# TYPE llorch_placement_pool_foreign_load gauge
llorch_placement_pool_foreign_load{node_id="n1",pool_id="pool-0"} 2
# HELP llorch_placement_pool_in_flight Tasks this control plane has sent to the pool and not yet seen end (exact, not a report).
# TYPE llorch_placement_pool_in_flight gauge
llorch_placement_pool_in_flight{node_id="n1",pool_id="pool-0"} 1
# HELP llorch_placement_pool_service_seconds How long a task holds one of the pool's slots, learned from its completed tasks.
# TYPE llorch_placement_pool_service_seconds gauge
llorch_placement_pool_service_seconds{node_id="n1",pool_id="pool-0"} 0.31
# HELP llorch_placement_session_affinities Sessions whose last pool placement remembers (bounded by size and age).
# TYPE llorch_placement_session_affinities gauge
llorch_placement_session_affinities 0
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.d)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
