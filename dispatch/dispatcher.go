package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/utilization"
)

// Fleet lists the pools placement may choose from, with their nodes'
// status, pool snapshots and GPUs (the registry, or the local runtime dir
// in the HOME profile).
type Fleet interface {
	Candidates() []scheduler.Candidate
}

// Placement is where a job runs.
type Placement struct {
	Candidate scheduler.Candidate
	// Score is the winner's total; RunnerUp the next best key and total
	// ("" when it had no rival), for the placement span.
	Score         int64
	RunnerUp      string
	RunnerUpScore int64
	QueuePosition int
	Waited        time.Duration
}

// Key names the placed pool.
func (p *Placement) Key() string { return p.Candidate.Key() }

// Job is a task waiting for, or holding, a pool.
type Job struct {
	ID       string
	Priority admission.Priority
	Req      scheduler.Request
	Deadline time.Time // zero: none
	Enqueued time.Time
	// Trace is the submitting request's span; placement spans are its
	// children.
	Trace trace.SpanContext

	placed chan Placement
	failed chan *api.Error
}

// NewJob returns a job for req.
func NewJob(id string, p admission.Priority, req scheduler.Request, deadline time.Time) *Job {
	return &Job{ID: id, Priority: p, Req: req, Deadline: deadline,
		placed: make(chan Placement, 1), failed: make(chan *api.Error, 1)}
}

// Wait blocks until the job is placed, fails, or ctx ends (then the job is
// withdrawn from the queue by the caller's Cancel).
func (j *Job) Wait(ctx context.Context) (Placement, *api.Error, error) {
	select {
	case p := <-j.placed:
		return p, nil, nil
	case e := <-j.failed:
		return Placement{}, e, nil
	case <-ctx.Done():
		return Placement{}, nil, ctx.Err()
	}
}

// Options configure a Dispatcher.
type Options struct {
	Fleet      Fleet
	Util       utilization.Source // may be nil
	Queue      *admission.Queue
	Scheduling scheduler.Options
	// Unplaceable is how long a queued task may find no pool that could
	// ever take it (the fleet lost its model) before it fails.
	Unplaceable time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics
	// Tracer records a span per placement; nil uses the global provider.
	Tracer trace.Tracer
	// Policy builds the placement framework from Scheduling; nil is
	// scheduler.NewDefault. Benchmarks use it to compare policies.
	Policy func(scheduler.Options) (*scheduler.Framework, error)
}

// Dispatcher places queued jobs.
type Dispatcher struct {
	opts        Options
	place       *scheduler.Framework // capacity filter, sampled on large fleets
	explainFull *scheduler.Framework // capacity filter, every candidate
	feasible    *scheduler.Framework // no capacity filter: could the task ever fit?
	now         func() time.Time

	mu         sync.Mutex
	inflight   map[string]int       // by candidate key
	failures   map[string]time.Time // by candidate key
	affinity   map[string]string    // session id -> candidate key
	unfittable map[string]time.Time // job id -> first pass it could not fit anywhere
	service    time.Duration        // moving average of task run time

	wake chan struct{}
	// passMu serialises placements: Run's passes and Submit's fast path.
	// It guards snap.
	passMu sync.Mutex
	snap   snapshot
	slots  atomic.Int64 // usable slots in the fleet, from the snapshot
}

// New builds a dispatcher.
func New(opts Options) (*Dispatcher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Unplaceable <= 0 {
		opts.Unplaceable = 10 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Tracer == nil {
		opts.Tracer = otel.Tracer("github.com/llorch/llorch/dispatch")
	}
	if opts.Policy == nil {
		opts.Policy = scheduler.NewDefault
	}
	sched := opts.Scheduling
	sched.RequireFreeSlot = true
	place, err := opts.Policy(sched)
	if err != nil {
		return nil, err
	}
	sched.RequireFreeSlot = false
	explain, err := opts.Policy(sched)
	if err != nil {
		return nil, err
	}
	return &Dispatcher{
		opts: opts, place: place.Sampled(), explainFull: place, feasible: explain, now: time.Now,
		inflight: map[string]int{}, failures: map[string]time.Time{},
		affinity: map[string]string{}, unfittable: map[string]time.Time{},
		service: time.Second,
		wake:    make(chan struct{}, 1),
	}, nil
}

// Wake asks for a placement pass soon (a heartbeat changed the fleet).
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// fresh builds the fleet's candidates with this control plane's own state,
// outside the placement path (explanations, retries). Placement uses the
// cached snapshot (shared).
func (d *Dispatcher) fresh() []scheduler.Candidate {
	cands := d.opts.Fleet.Candidates()
	d.mu.Lock()
	for i := range cands {
		k := cands[i].Key()
		cands[i].InFlight = d.inflight[k]
		cands[i].RecentFailure = d.failures[k]
	}
	d.mu.Unlock()
	if d.opts.Util != nil {
		for i := range cands {
			c := &cands[i]
			c.Util = d.opts.Util.Get(c.NodeID, c.Pool.PoolID, c.Pool.DeviceMask)
		}
	}
	return cands
}

func (d *Dispatcher) affinityOf(session string) string {
	if session == "" {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.affinity[session]
}

// Explain ranks the fleet for req as placement would now, with the
// capacity filter, so full pools show as rejected.
func (d *Dispatcher) Explain(req scheduler.Request) (*scheduler.Decision, error) {
	return d.explainFull.Schedule(d.now(), &req, d.fresh(), d.affinityOf(req.SessionID))
}

// Scorers names the score components of explanations, in order.
func (d *Dispatcher) Scorers() []scheduler.WeightedScorer { return d.place.Scorers() }

// Submit admits a job: placed at once when nothing waits and a pool has a
// free slot; else it fails at once if no pool could ever take it, or its
// deadline cannot be met; otherwise it is queued. It returns the
// job's queue position and the predicted wait.
func (d *Dispatcher) Submit(j *Job) (position int, predicted time.Duration, e *api.Error) {
	now := d.now()
	j.Enqueued = now
	if !j.Deadline.IsZero() && now.After(j.Deadline) {
		return 0, 0, &api.Error{Code: api.CodeDeadlineUnmet, Message: "the deadline has already passed"}
	}
	placed, feasible := d.placeNow(j, now)
	if placed {
		d.opts.Metrics.admission("admitted")
		return 0, 0, nil
	}
	if !feasible {
		d.opts.Metrics.decision("unavailable")
		return 0, 0, d.unavailable(&j.Req)
	}
	predicted = d.predictWait()
	if !j.Deadline.IsZero() && now.Add(predicted).After(j.Deadline) {
		return 0, 0, &api.Error{Code: api.CodeDeadlineUnmet, Message: fmt.Sprintf("predicted start in %v is past the deadline", predicted.Round(time.Millisecond))}
	}
	evicted, err := d.opts.Queue.Push(&admission.Item{ID: j.ID, Priority: j.Priority, Enqueued: now, Value: j})
	if errors.Is(err, admission.ErrFull) {
		d.opts.Metrics.admission("rejected")
		return 0, 0, &api.Error{Code: api.CodeAdmissionReject, Message: fmt.Sprintf("admission queue full (%d tasks)", d.opts.Queue.Capacity()),
			Retriable: true, RetryAfterMS: max(1000, d.predictWait().Milliseconds()), PolicyLabel: string(admission.Reject)}
	}
	if evicted != nil {
		d.opts.Metrics.admission("evicted")
		evicted.Value.(*Job).failed <- &api.Error{Code: api.CodeQueueFullDropLRU,
			Message: "evicted from the full admission queue by a newer task (drop-lru)", Retriable: true,
			RetryAfterMS: 1000, PolicyLabel: string(admission.DropLRU)}
	}
	d.opts.Metrics.admission("admitted")
	// A pass running meanwhile may have placed the job already: it is
	// then first in line, not at position -1.
	position = max(0, d.opts.Queue.Position(j.ID))
	d.Wake()
	return position, predicted, nil
}

// unavailable classifies why no pool fits.
func (d *Dispatcher) unavailable(req *scheduler.Request) *api.Error {
	if req.Model != "" {
		served := false
		for _, c := range d.opts.Fleet.Candidates() {
			for _, m := range c.Pool.Models {
				if m == req.Model && c.NodeStatus == api.StatusOnline && c.Pool.Ready {
					served = true
				}
			}
		}
		if !served {
			return &api.Error{Code: api.CodeModelNotAvailable, Message: "no ready pool serves model " + req.Model, Retriable: true, RetryAfterMS: 5000}
		}
	}
	return &api.Error{Code: api.CodePoolUnavailable, Message: "no pool can take the task: every pool is filtered out (not ready, draining, offline, pinned elsewhere, avoided, or short of VRAM); see GET /v2/placement/explain",
		Retriable: true, RetryAfterMS: 5000}
}

// predictWait estimates when a task admitted now would start: the queue
// ahead of it, served by the fleet's slots at the average service time.
func (d *Dispatcher) predictWait() time.Duration {
	ahead := d.opts.Queue.Len(admission.Interactive) + d.opts.Queue.Len(admission.Batch)
	if ahead == 0 {
		return 0
	}
	slots := d.slots.Load()
	d.mu.Lock()
	svc := d.service
	d.mu.Unlock()
	return time.Duration(float64(svc) * float64(ahead) / float64(max(1, slots)))
}

// Cancel withdraws a queued job; false if it was not queued (already
// placed, or unknown).
func (d *Dispatcher) Cancel(id string) bool {
	ok := d.opts.Queue.Remove(id)
	d.mu.Lock()
	delete(d.unfittable, id)
	d.mu.Unlock()
	return ok
}

// Abandon withdraws a job whose waiter gave up (its Wait ended with its
// context). Queued, it leaves the queue. Otherwise the dispatcher took it
// out of the queue and has handed it, or is about to hand it, a placement
// or a failure, which Wait did not collect (select picks at random among
// ready cases): that outcome is collected here and a placement's slot
// released, or the pool would count the job in flight forever.
func (d *Dispatcher) Abandon(j *Job) {
	if d.Cancel(j.ID) {
		return
	}
	// Whatever removed the job from the queue sends it exactly one outcome
	// right after; the channels are buffered, so this wait is short.
	select {
	case p := <-j.placed:
		d.Release(p, "", Abandoned, 0)
	case e := <-j.failed:
		d.opts.Logger.Debug("an abandoned job failed meanwhile", "task_id", j.ID, "code", e.Code)
	}
}

// Outcome of a placed job, for Release.
type Outcome int

// Outcomes.
const (
	Succeeded Outcome = iota
	// EngineFailed quarantines the pool.
	EngineFailed
	// Abandoned: cancelled or the client left; the pool was fine.
	Abandoned
)

// Release returns a placed job's slot.
func (d *Dispatcher) Release(p Placement, session string, outcome Outcome, ran time.Duration) {
	k := p.Key()
	d.mu.Lock()
	if d.inflight[k]--; d.inflight[k] <= 0 {
		delete(d.inflight, k)
	}
	switch outcome {
	case EngineFailed:
		d.failures[k] = d.now()
	case Succeeded:
		delete(d.failures, k)
		if session != "" {
			d.affinity[session] = k
		}
		// An exponential moving average of service time for predictions.
		d.service = (d.service*7 + ran) / 8
	}
	d.mu.Unlock()
	d.Wake()
}

// Retry queues a job again at the front of its lane, avoiding the pool
// that failed it. It reports false, and queues nothing, when no other pool
// could ever take the job: the caller reports the engine's failure at once
// instead of the job waiting out Unplaceable for a pool that is not there.
func (d *Dispatcher) Retry(j *Job, failed Placement) bool {
	j.Req.AvoidPools = append(j.Req.AvoidPools, failed.Key())
	if !d.feasible.AnyFeasible(d.now(), &j.Req, d.fresh()) {
		return false
	}
	d.opts.Queue.PushFront(&admission.Item{ID: j.ID, Priority: j.Priority, Enqueued: j.Enqueued, Value: j})
	d.Wake()
	return true
}

// Run places queued jobs until ctx is done.
func (d *Dispatcher) Run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-tick.C:
		}
		d.pass()
	}
}

// pass offers every queued job to placement once, in priority order.
func (d *Dispatcher) pass() {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	items := d.opts.Queue.Items()
	d.opts.Metrics.queueDepth(d.opts.Queue)
	if len(items) == 0 {
		return
	}
	now := d.now()
	cands := d.shared()
	for pos, it := range items {
		j := it.Value.(*Job)
		if !j.Deadline.IsZero() && now.After(j.Deadline) {
			if d.opts.Queue.Remove(j.ID) {
				d.opts.Metrics.decision("deadline")
				j.failed <- &api.Error{Code: api.CodeDeadlineUnmet, Message: "deadline passed while queued"}
			}
			continue
		}
		if !d.placeJob(j, pos, now, cands, true) {
			d.checkUnfittable(j, now, cands)
		}
	}
	d.opts.Metrics.queueDepth(d.opts.Queue)
}

// placeNow places a job in the submitting goroutine when nothing is
// queued ahead of it, sparing it two goroutine hand-offs through Run; when
// it cannot, it reports whether any pool could ever take the job. Called
// under no lock; it takes passMu, so placements stay serial.
func (d *Dispatcher) placeNow(j *Job, now time.Time) (placed, feasible bool) {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	cands := d.shared()
	if d.opts.Queue.Len(admission.Interactive)+d.opts.Queue.Len(admission.Batch) == 0 && d.placeJob(j, 0, now, cands, false) {
		return true, true
	}
	return false, d.feasible.AnyFeasible(now, &j.Req, cands)
}

// placeJob schedules j over cands and, if a pool fits, hands j its
// placement. A queued job is taken out of the queue; one cancelled
// meanwhile is dropped (and counts as handled). It reports false when no
// pool fits now. Call with passMu held.
func (d *Dispatcher) placeJob(j *Job, pos int, now time.Time, cands []scheduler.Candidate, queued bool) bool {
	begin := time.Now()
	dec, err := d.place.Schedule(now, &j.Req, cands, d.affinityOf(j.Req.SessionID))
	d.opts.Metrics.placementLatency(time.Since(begin))
	if err != nil {
		d.place.Release(dec)
		return false
	}
	d.traceDecision(j, dec, begin, pos)
	if queued && !d.opts.Queue.Remove(j.ID) {
		d.place.Release(dec)
		return true // cancelled meanwhile
	}
	best := dec.Ranked[0].Candidate
	pl := Placement{Candidate: *best, Score: dec.Ranked[0].Total, QueuePosition: pos, Waited: now.Sub(j.Enqueued)}
	if len(dec.Ranked) > 1 {
		pl.RunnerUp, pl.RunnerUpScore = dec.Ranked[1].Candidate.Key(), dec.Ranked[1].Total
	}
	d.place.Release(dec)
	best.InFlight++ // later jobs of this pass see the slot taken
	d.snap.touch(best)
	d.mu.Lock()
	d.inflight[best.Key()]++
	delete(d.unfittable, j.ID)
	d.mu.Unlock()
	d.opts.Metrics.decision("placed")
	pl.Candidate.InFlight = best.InFlight
	j.placed <- pl
	return true
}

// traceDecision records the decision as a span under the submitting
// request: the winner's score components, the runner-up, the sample size.
// One span per decision, not per candidate.
func (d *Dispatcher) traceDecision(j *Job, dec *scheduler.Decision, begin time.Time, pos int) {
	if !j.Trace.IsValid() {
		return
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), j.Trace)
	_, span := d.opts.Tracer.Start(ctx, "placement", trace.WithTimestamp(begin))
	defer span.End()
	if !span.IsRecording() {
		return
	}
	best := dec.Ranked[0]
	attrs := []attribute.KeyValue{
		attribute.String("llorch.task_id", j.ID),
		attribute.String("llorch.model", j.Req.Model),
		attribute.Int("llorch.queue_position", pos),
		attribute.Int("llorch.candidates.examined", dec.Examined),
		attribute.Int("llorch.candidates.feasible", len(dec.Ranked)),
		attribute.String("llorch.placed.node_id", best.Candidate.NodeID),
		attribute.String("llorch.placed.pool_id", best.Candidate.Pool.PoolID),
		attribute.Int64("llorch.placed.score", best.Total),
		attribute.Int("llorch.placed.free_slots", best.Candidate.FreeSlots()),
	}
	for i, ws := range d.place.Scorers() {
		attrs = append(attrs, attribute.Int64("llorch.placed.score."+ws.Plugin.Name(), best.Components[i]))
	}
	if len(dec.Ranked) > 1 {
		ru := dec.Ranked[1]
		attrs = append(attrs, attribute.String("llorch.runner_up", ru.Candidate.Key()), attribute.Int64("llorch.runner_up.score", ru.Total))
	}
	span.SetAttributes(attrs...)
}

// checkUnfittable fails a job that no pool could take even with a free
// slot for longer than Unplaceable; a job merely waiting for a slot waits.
func (d *Dispatcher) checkUnfittable(j *Job, now time.Time, cands []scheduler.Candidate) {
	fits := d.feasible.AnyFeasible(now, &j.Req, cands)
	d.mu.Lock()
	defer d.mu.Unlock()
	if fits {
		delete(d.unfittable, j.ID)
		return
	}
	first, ok := d.unfittable[j.ID]
	if !ok {
		d.unfittable[j.ID] = now
		return
	}
	if now.Sub(first) < d.opts.Unplaceable {
		return
	}
	delete(d.unfittable, j.ID)
	if d.opts.Queue.Remove(j.ID) {
		d.opts.Metrics.decision("unavailable")
		j.failed <- d.unavailable(&j.Req)
	}
}
