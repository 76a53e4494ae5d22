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
	// Estimate is the winner's expected latency when it was chosen.
	Estimate scheduler.Estimate
	// Backlogged is set when the task was sent beyond the pool's free
	// slots, to wait in the engine's own queue.
	Backlogged bool
	// Retried is set on the second attempt, after an engine failed.
	Retried bool
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
	// Predicted is the expected latency at admission, for predicted_start_ms
	// and the prediction-error histogram.
	Predicted scheduler.Estimate

	// waitsFor is the pool (candidate key) the last pass left the job
	// waiting for, in the fleet snapshot built at waitsSince; guarded by
	// passMu.
	waitsFor   string
	waitsSince time.Time

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
	// TTFTWeight weighs time to first token against latency in placement
	// (0: scheduler.DefaultTTFTWeight).
	TTFTWeight float64
	// Backlog is how many tasks a pool's engine may hold waiting beyond
	// its slots; 0 keeps every waiting task in this control plane's queue,
	// where priorities hold and the pool is chosen when a slot frees.
	Backlog int
	// ForeignTTL is how long load an engine reported beyond this control
	// plane's own tasks is counted (default 15 s: a heartbeat and an
	// engine poll at the default intervals).
	ForeignTTL time.Duration
	// StallTimeout cuts an engine request whose engine sends nothing for
	// this long, before its first byte or between two (0: never); the task
	// moves to another pool if nothing reached its client yet.
	StallTimeout time.Duration
	// ClientWriteTimeout ends a request whose client takes none of a write
	// for this long (0: never).
	ClientWriteTimeout time.Duration
	// AffinityTTL and AffinitySize bound the memory of which pool served
	// each session (defaults DefaultAffinityTTL, DefaultAffinitySize).
	AffinityTTL  time.Duration
	AffinitySize int
	// Unplaceable is how long a queued task may find no pool that could
	// ever take it (the fleet lost its model) before it fails.
	Unplaceable time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics
	// Tracer records a span per placement; nil uses the global provider.
	Tracer trace.Tracer
	// Policy builds the placement framework from Scheduling; nil is
	// scheduler.NewDefault.
	Policy func(scheduler.Options) (*scheduler.Framework, error)
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Dispatcher places queued jobs. It keeps the exact account of this
// control plane's tasks on every pool: a slot is taken when a task is sent
// and given back when its answer ends, and giving one back places the next
// queued task at once.
type Dispatcher struct {
	opts        Options
	place       *scheduler.Framework // sampled on large fleets
	explainFull *scheduler.Framework // every candidate
	now         func() time.Time
	epoch       time.Time // bucket 0 of the in-flight histories

	mu         sync.Mutex
	books      map[string]*poolBook // by candidate key
	dirty      map[string]struct{}  // books changed since the snapshot's overlay
	affinity   *affinities          // session id -> candidate key
	unfittable map[string]time.Time // job id -> first pass it could not fit anywhere
	taskTokens float64              // mean generated tokens per task
	prior      scheduler.Speed      // median of the measured pools
	priorAt    time.Time

	wake chan struct{}
	// passMu serialises placements: passes and Submit's fast path. It
	// guards snap. passPending asks its holder for another pass.
	passMu      sync.Mutex
	passPending atomic.Bool
	snap        snapshot

	// closed is the error of a closed dispatcher (see Close): Submit
	// refuses with it. Nil while open.
	closed atomic.Pointer[api.Error]
	// runs tracks the Execute calls in progress (see shutdown.go).
	runs runs
}

// New builds a dispatcher.
func New(opts Options) (*Dispatcher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Unplaceable <= 0 {
		opts.Unplaceable = 10 * time.Second
	}
	if opts.AffinityTTL <= 0 {
		opts.AffinityTTL = DefaultAffinityTTL
	}
	if opts.AffinitySize <= 0 {
		opts.AffinitySize = DefaultAffinitySize
	}
	if opts.ForeignTTL <= 0 {
		opts.ForeignTTL = 15 * time.Second
	}
	if opts.Backlog < 0 {
		return nil, fmt.Errorf("engine backlog %d: want 0 or more", opts.Backlog)
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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	full, err := opts.Policy(opts.Scheduling)
	if err != nil {
		return nil, err
	}
	return &Dispatcher{
		opts: opts, place: full.Sampled(), explainFull: full, now: opts.Now, epoch: opts.Now(),
		books: map[string]*poolBook{}, dirty: map[string]struct{}{},
		affinity: newAffinities(opts.AffinityTTL, opts.AffinitySize), unfittable: map[string]time.Time{},
		wake: make(chan struct{}, 1), runs: runs{cancels: map[uint64]context.CancelCauseFunc{}},
	}, nil
}

// bucket numbers t in the in-flight histories.
func (d *Dispatcher) bucket(t time.Time) int64 { return int64(t.Sub(d.epoch) / historyBucket) }

// book returns key's book, creating it. Call with mu held.
// InFlight returns this control plane's tasks in flight by candidate key
// (Candidate.Key), for the other control planes sharing the fleet.
func (d *Dispatcher) InFlight() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int)
	for k, b := range d.books {
		if b.inflight > 0 {
			out[k] = b.inflight
		}
	}
	return out
}

func (d *Dispatcher) book(key string) *poolBook {
	b, ok := d.books[key]
	if !ok {
		b = &poolBook{history: newLoadHistory()}
		d.books[key] = b
	}
	return b
}

// Wake asks for a placement pass soon.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// hints are the dispatcher's facts for one decision. Call with mu free.
func (d *Dispatcher) hints(session string) scheduler.Hints {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := scheduler.Hints{TaskTokens: int(d.taskTokens + 0.5), Prior: d.prior, TTFTWeight: d.opts.TTFTWeight}
	if session != "" {
		h.AffinityPool = d.affinity.get(session, d.now())
	}
	return h
}

// fresh builds the fleet's candidates with this control plane's own state,
// outside the placement path (explanations). Placement uses the cached
// snapshot (shared).
func (d *Dispatcher) fresh() []scheduler.Candidate {
	cands := d.opts.Fleet.Candidates()
	now := d.now()
	d.mu.Lock()
	for i := range cands {
		if b, ok := d.books[cands[i].Key()]; ok {
			b.overlay(&cands[i], now)
		}
	}
	d.mu.Unlock()
	if d.opts.Util != nil {
		for i := range cands {
			c := &cands[i]
			c.Util = d.opts.Util.Get(c.NodeID, c.Pool.PoolID, c.Pool.DeviceMask)
		}
	}
	d.passMu.Lock()
	for i := range cands {
		if j, ok := d.snap.index[cands[i].Key()]; ok {
			cands[i].Waiting = d.snap.cands[j].Waiting
		}
	}
	d.unlockPass()
	return cands
}

// Explain ranks the fleet for req as placement would now.
func (d *Dispatcher) Explain(req scheduler.Request) (*scheduler.Decision, error) {
	return d.explainFull.Schedule(d.now(), &req, d.fresh(), d.hints(req.SessionID))
}

// Scorers names the score components of explanations, in order.
func (d *Dispatcher) Scorers() []scheduler.WeightedScorer { return d.place.Scorers() }

// ClientWriteTimeout is how long a client may take none of a write.
func (d *Dispatcher) ClientWriteTimeout() time.Duration { return d.opts.ClientWriteTimeout }

// Backlog is how many tasks an engine may hold beyond its slots.
func (d *Dispatcher) Backlog() int { return d.opts.Backlog }

// Submit admits a job: placed at once when nothing waits and the best pool
// has room; else it fails at once if no pool could ever take it, or its
// deadline cannot be met; otherwise it is queued. It returns the job's
// queue position and its predicted wait.
func (d *Dispatcher) Submit(j *Job) (position int, predicted time.Duration, e *api.Error) {
	if e := d.closedErr(); e != nil {
		return 0, 0, e
	}
	now := d.now()
	j.Enqueued = now
	if !j.Deadline.IsZero() && now.After(j.Deadline) {
		return 0, 0, &api.Error{Code: api.CodeDeadlineUnmet, Message: "the deadline has already passed"}
	}
	placed, feasible := d.placeNow(j, now)
	if placed {
		d.opts.Metrics.admission("admitted")
		return 0, j.Predicted.Wait, nil
	}
	if !feasible {
		d.opts.Metrics.decision("unavailable")
		return 0, 0, d.unavailable(&j.Req)
	}
	predicted = j.Predicted.Wait
	if !j.Deadline.IsZero() && now.Add(predicted).After(j.Deadline) {
		d.opts.Metrics.decision("deadline")
		return 0, 0, &api.Error{Code: api.CodeDeadlineUnmet, Message: fmt.Sprintf("predicted start in %v is past the deadline", predicted.Round(time.Millisecond))}
	}
	evicted, err := d.opts.Queue.Push(&admission.Item{ID: j.ID, Priority: j.Priority, Enqueued: now, Value: j})
	if errors.Is(err, admission.ErrFull) {
		d.opts.Metrics.admission("rejected")
		return 0, 0, &api.Error{Code: api.CodeAdmissionReject, Message: fmt.Sprintf("admission queue full (%d tasks)", d.opts.Queue.Capacity()),
			Retriable: true, RetryAfterMS: min(max(1000, predicted.Milliseconds()), maxRetryAfterMS), PolicyLabel: string(d.opts.Queue.Policy())}
	}
	if evicted != nil {
		d.opts.Metrics.admission("evicted")
		evicted.Value.(*Job).failed <- &api.Error{Code: api.CodeQueueFullDropLRU,
			Message: "evicted from the full admission queue by a newer task (drop-lru)", Retriable: true,
			RetryAfterMS: 1000, PolicyLabel: string(admission.DropLRU)}
	}
	if e := d.closedErr(); e != nil && d.opts.Queue.Remove(j.ID) {
		// Close ran between the check above and the push, and did not
		// see the job: refuse it here. (If Close saw it, the job gets
		// Close's error through its Wait.)
		return 0, 0, e
	}
	d.opts.Metrics.admission("admitted")
	// A pass running meanwhile may have placed the job already: it is
	// then first in line, not at position -1.
	position = max(0, d.opts.Queue.Position(j.ID))
	d.Wake()
	return position, predicted, nil
}

// maxRetryAfterMS bounds the Retry-After of a full queue: the predicted
// wait of a long queue of long tasks can be minutes, and a client told to
// come back that late would rather try another control plane.
const maxRetryAfterMS = 60_000

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
	return &api.Error{Code: api.CodePoolUnavailable, Message: "no pool can take the task: every pool is filtered out (not ready, draining, offline, pinned elsewhere, avoided, or quarantined); see GET /v2/placement/explain",
		Retriable: true, RetryAfterMS: 5000}
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
		d.Release(p, "", Abandoned, Observation{})
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
	// Abandoned: cancelled, the client left, or the engine refused the
	// request itself; the pool was fine.
	Abandoned
)

// Release gives back a placed job's slot and places the next queued task
// at once. A succeeded task's observation teaches the pool's speed.
func (d *Dispatcher) Release(p Placement, session string, outcome Outcome, obs Observation) {
	k := p.Key()
	now := d.now()
	d.mu.Lock()
	b := d.book(k)
	b.inflight = max(0, b.inflight-1)
	b.history.record(d.bucket(now), b.inflight)
	b.lastUsed = now
	switch outcome {
	case EngineFailed:
		b.failure = now
	case Succeeded:
		b.failure = time.Time{}
		if session != "" {
			d.affinity.set(session, k, now)
		}
		b.speed.observe(obs, p.Backlogged)
		if obs.Tokens > 0 {
			d.taskTokens = ewma(d.taskTokens, float64(obs.Tokens), min(int(d.taskTokens)+1, 10))
		}
		if now.Sub(d.priorAt) >= time.Second {
			d.prior, d.priorAt = fleetSpeed(d.books), now
		}
	}
	d.dirty[k] = struct{}{}
	d.mu.Unlock()
	d.pass()
}

// Retry queues a job again at the front of its lane, avoiding the pool
// that failed it. It reports false, and queues nothing, when no other pool
// could ever take the job: the caller reports the engine's failure at once
// instead of the job waiting out Unplaceable for a pool that is not there.
func (d *Dispatcher) Retry(j *Job, failed Placement) bool {
	if d.Closed() {
		return false // shutting down: report the failure, queue nothing
	}
	j.Req.AvoidPools = append(j.Req.AvoidPools, failed.Key())
	if !d.explainFull.AnyFeasible(d.now(), &j.Req, d.fresh()) {
		return false
	}
	d.opts.Queue.PushFront(&admission.Item{ID: j.ID, Priority: j.Priority, Enqueued: j.Enqueued, Value: j})
	d.Wake()
	return true
}

// Run places queued jobs until ctx is done: when woken, and on a tick that
// catches deadlines and fleet changes (a pool turning ready, foreign load
// ageing out).
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

// pass offers every queued job to placement once, in priority order. A job
// whose best pool is full waits for it, and counts as waiting there for the
// jobs behind it. Passes are serial; one asked for while another runs is
// run by that one when it ends, so slots freed meanwhile are not missed.
func (d *Dispatcher) pass() {
	d.passPending.Store(true)
	for d.passPending.Load() {
		if !d.passMu.TryLock() {
			return // the holder passes again when it unlocks
		}
		d.passPending.Store(false)
		d.passLocked()
		d.passMu.Unlock()
	}
}

// unlockPass releases passMu, running a pass asked for while it was held.
func (d *Dispatcher) unlockPass() {
	d.passMu.Unlock()
	if d.passPending.Load() {
		d.pass()
	}
}

func (d *Dispatcher) passLocked() {
	if d.opts.Queue.Len(admission.Interactive)+d.opts.Queue.Len(admission.Batch) == 0 {
		d.opts.Metrics.queueDepth(d.opts.Queue)
		return
	}
	items := d.opts.Queue.Items()
	now := d.now()
	cands := d.shared(now)
	d.snap.clearWaiting()
	// Whether any pool has room changes only when a job is placed: known
	// once, then again after each placement.
	room, roomKnown := false, false
	for pos, it := range items {
		j := it.Value.(*Job)
		if !j.Deadline.IsZero() && now.After(j.Deadline) {
			if d.opts.Queue.Remove(j.ID) {
				d.opts.Metrics.decision("deadline")
				j.failed <- &api.Error{Code: api.CodeDeadlineUnmet, Message: "deadline passed while queued"}
			}
			continue
		}
		if !roomKnown {
			room, roomKnown = roomAnywhere(cands, d.opts.Backlog), true
		}
		if i, ok := d.snap.index[j.waitsFor]; ok && j.waitsSince.Equal(d.snap.built) && !room {
			// Every pool is full and the fleet is as it was when the job
			// was last scored, so it cannot be placed in this pass: it
			// keeps waiting where it waited. Scoring every queued job on
			// every slot given back made a saturated control plane spend
			// most of its time re-ranking its queue (the queue's length
			// times the task rate); now each is scored again when the
			// fleet changes (at most every 100 ms) or room appears.
			cands[i].Waiting++
			d.snap.touchWaiting(&cands[i])
			continue
		}
		placed, feasible := d.placeJob(j, pos, now, cands, true)
		if placed {
			roomKnown = false
		}
		if !feasible {
			d.checkUnfittable(j, now)
		}
	}
	d.opts.Metrics.queueDepth(d.opts.Queue)
}

// roomAnywhere reports whether any pool that could take work (ready, not
// draining, its node online) has room for one more task. It errs towards
// yes: a pool a filter would refuse still counts.
func roomAnywhere(cands []scheduler.Candidate, backlog int) bool {
	for i := range cands {
		c := &cands[i]
		if c.Pool.Ready && !c.Pool.Draining && c.NodeStatus != api.StatusOffline && c.NodeStatus != api.StatusDraining && c.HasRoom(backlog) {
			return true
		}
	}
	return false
}

// placeNow places a job in the submitting goroutine when nothing is
// queued ahead of it, sparing it two goroutine hand-offs through Run.
// Either way it fills in the job's predicted latency, and reports whether
// any pool could take the job. Called under no lock; it takes passMu, so
// placements stay serial.
func (d *Dispatcher) placeNow(j *Job, now time.Time) (placed, feasible bool) {
	d.passMu.Lock()
	defer d.unlockPass()
	cands := d.shared(now)
	queued := d.opts.Queue.Len(admission.Interactive)+d.opts.Queue.Len(admission.Batch) > 0
	if !queued {
		return d.placeJob(j, 0, now, cands, false)
	}
	// Others wait ahead: only predict. The waiting counts of the last pass
	// stand for them.
	dec, err := d.place.Schedule(now, &j.Req, cands, d.hints(j.Req.SessionID))
	defer d.place.Release(dec)
	if err != nil {
		return false, false
	}
	j.Predicted = dec.Ranked[0].Estimate
	return false, true
}

// placeJob schedules j over cands and, if the best pool has room, hands j
// its placement; if the best pool is full, j waits for it. A queued job is
// taken out of the queue; one cancelled meanwhile is dropped (and counts as
// placed). It reports whether j was placed, and whether any pool could take
// it at all. Call with passMu held.
func (d *Dispatcher) placeJob(j *Job, pos int, now time.Time, cands []scheduler.Candidate, queued bool) (placed, feasible bool) {
	begin := time.Now()
	dec, err := d.place.Schedule(now, &j.Req, cands, d.hints(j.Req.SessionID))
	d.opts.Metrics.placementLatency(time.Since(begin), j.Trace)
	defer d.place.Release(dec)
	if err != nil {
		return false, false
	}
	best := dec.Ranked[0].Candidate
	if !queued {
		j.Predicted = dec.Ranked[0].Estimate
	}
	if queued {
		d.fits(j.ID)
	}
	if !best.HasRoom(d.opts.Backlog) {
		// Waiting for this pool beats the others' free slots: hold the job
		// here, and count it ahead of the jobs behind it.
		best.Waiting++
		d.snap.touchWaiting(best)
		j.waitsFor, j.waitsSince = best.Key(), d.snap.built
		return false, true
	}
	d.traceDecision(j, dec, begin, pos)
	if queued && !d.opts.Queue.Remove(j.ID) {
		return true, true // cancelled meanwhile
	}
	pl := Placement{Candidate: *best, Score: dec.Ranked[0].Total, QueuePosition: pos, Waited: now.Sub(j.Enqueued),
		Estimate: dec.Ranked[0].Estimate, Backlogged: best.FreeSlots() == 0}
	if len(dec.Ranked) > 1 {
		pl.RunnerUp, pl.RunnerUpScore = dec.Ranked[1].Candidate.Key(), dec.Ranked[1].Total
	}
	best.InFlight++ // later jobs of this pass see the slot taken
	key := best.Key()
	d.mu.Lock()
	b := d.book(key)
	b.inflight++
	b.history.record(d.bucket(now), b.inflight)
	b.lastUsed = now
	d.mu.Unlock()
	d.opts.Metrics.decision("placed")
	pl.Candidate.InFlight = best.InFlight
	j.placed <- pl
	return true, true
}

// traceDecision records the decision as a span under the submitting
// request: the winner's score components and expected latency, the
// runner-up, the sample size. One span per decision, not per candidate.
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
		attribute.Int("llorch.placed.in_flight", best.Candidate.InFlight),
		attribute.Float64("llorch.placed.expected_wait_ms", ms(best.Estimate.Wait)),
		attribute.Float64("llorch.placed.expected_ttft_ms", ms(best.Estimate.TTFT)),
		attribute.Float64("llorch.placed.expected_latency_ms", ms(best.Estimate.Latency)),
		attribute.String("llorch.placed.speed_source", best.Estimate.Source),
	}
	for i, ws := range d.place.Scorers() {
		attrs = append(attrs, attribute.Int64("llorch.placed.score."+ws.Plugin.Name(), best.Components[i]))
	}
	if len(dec.Ranked) > 1 {
		ru := dec.Ranked[1]
		attrs = append(attrs, attribute.String("llorch.runner_up", ru.Candidate.Key()), attribute.Int64("llorch.runner_up.score", ru.Total),
			attribute.Float64("llorch.runner_up.expected_latency_ms", ms(ru.Estimate.Latency)))
	}
	span.SetAttributes(attrs...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fits forgets that a queued job found no pool.
func (d *Dispatcher) fits(id string) {
	d.mu.Lock()
	delete(d.unfittable, id)
	d.mu.Unlock()
}

// checkUnfittable fails a job that no pool could take for longer than
// Unplaceable; a job merely waiting for a slot waits.
func (d *Dispatcher) checkUnfittable(j *Job, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
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
