package dispatch

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/scheduler"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// staticFleet is a Fleet whose candidates the test sets.
type staticFleet struct {
	mu    sync.Mutex
	cands []scheduler.Candidate
}

var _ Fleet = (*staticFleet)(nil)

func newFleet(cands ...scheduler.Candidate) *staticFleet {
	return &staticFleet{cands: cands}
}

func (f *staticFleet) Candidates() []scheduler.Candidate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cands)
}

func (f *staticFleet) set(cands ...scheduler.Candidate) {
	f.mu.Lock()
	f.cands = cands
	f.mu.Unlock()
}

var quiet = slog.New(slog.DiscardHandler)

type harness struct {
	d     *Dispatcher
	fleet *staticFleet
	queue *admission.Queue
	reg   *prometheus.Registry
	m     *Metrics
}

type harnessOpt func(*Options)

func withQueue(capacity int, p admission.Policy) harnessOpt {
	return func(o *Options) { o.Queue = admission.New(capacity, p) }
}

func newHarness(t *testing.T, fleet *staticFleet, opts ...harnessOpt) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	o := Options{
		Fleet: fleet, Queue: admission.New(16, admission.Reject), Unplaceable: 50 * time.Millisecond,
		Logger: quiet, Metrics: m, Scheduling: scheduler.Options{Quarantine: time.Minute},
	}
	for _, f := range opts {
		f(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{d: d, fleet: fleet, queue: o.Queue, reg: reg, m: m}
}

// run drives the dispatcher's loop until the test ends.
func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (h *harness) inflight(key string) int {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if b, ok := h.d.books[key]; ok {
		return b.inflight
	}
	return 0
}

// withClock makes the dispatcher read time from c.
func withClock(c *clocktest.Clock) harnessOpt {
	return func(o *Options) { o.Now = c.Now }
}

// submit admits a job, failing the test on an admission error.
func (h *harness) submit(t *testing.T, id string, p admission.Priority, req scheduler.Request) *Job {
	t.Helper()
	j := NewJob(id, p, req, time.Time{})
	if _, _, e := h.d.Submit(j); e != nil {
		t.Fatalf("submit %s: %v", id, e)
	}
	return j
}

// waitPlaced waits for the job's placement.
func waitPlaced(t *testing.T, j *Job) Placement {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, e, err := j.Wait(ctx)
	if err != nil {
		t.Fatalf("job %s: not placed: %v", j.ID, err)
	}
	if e != nil {
		t.Fatalf("job %s: failed: %v", j.ID, e)
	}
	return p
}

// waitFailed waits for the job's failure and returns it.
func waitFailed(t *testing.T, j *Job) *api.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, e, err := j.Wait(ctx)
	if err != nil {
		t.Fatalf("job %s: neither placed nor failed: %v", j.ID, err)
	}
	if e == nil {
		t.Fatalf("job %s: placed on %s, want a failure", j.ID, p.Key())
	}
	return e
}

// passNow runs one whole placement pass, after any pass in progress (the
// Run loop's) ends: when it returns, whatever could be placed is placed.
// h.d.pass() is not enough while Run runs: it leaves the pass to the
// goroutine holding passMu and returns before that pass ends.
func (h *harness) passNow() {
	h.d.passMu.Lock()
	h.d.passLocked()
	h.d.unlockPass()
}

// notPlaced asserts that the job waits for a slot: a whole pass run now
// neither places it nor fails it, nor counts it as fitting no pool (which
// would fail it after Unplaceable). A pass proves it; no time is waited.
func (h *harness) notPlaced(t *testing.T, j *Job) {
	t.Helper()
	h.passNow()
	if p, ok := placedNow(j); ok {
		t.Fatalf("job %s placed on %s, want it queued", j.ID, p.Key())
	}
	select {
	case e := <-j.failed:
		t.Fatalf("job %s failed: %v", j.ID, e)
	default:
	}
	h.d.mu.Lock()
	_, unfittable := h.d.unfittable[j.ID]
	h.d.mu.Unlock()
	if unfittable {
		t.Fatalf("job %s found no pool that could take it, want it waiting for a slot", j.ID)
	}
}

// placedNow reports a placement already handed to the job, without
// waiting (after a synchronous pass).
func placedNow(j *Job) (Placement, bool) {
	select {
	case p := <-j.placed:
		return p, true
	default:
		return Placement{}, false
	}
}

// engineClient is a client for the test engines whose idle connections are
// closed when the test ends (goleak).
func engineClient(t *testing.T) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
