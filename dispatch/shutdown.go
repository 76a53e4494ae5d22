package dispatch

import (
	"context"
	"errors"
	"sync"

	"github.com/llorch/llorch/api"
)

// A control plane shuts down in three steps, each a method here:
//
//  1. Close: admit nothing more (Submit refuses with Close's error) and
//     end every queued job with that error.
//  2. Drain: wait, up to the caller's grace, for the jobs that hold a
//     pool (every Execute in progress) to finish on their own.
//  3. Abort: stop the ones still running; each Execute returns the
//     abort's error, which its front end reports to its client (an SSE
//     error event, an OpenAI error chunk or status). Drain again, briefly,
//     to see them gone.

// runs is the set of Execute calls in progress, each with the cancel
// function of its context.
type runs struct {
	mu      sync.Mutex
	next    uint64
	cancels map[uint64]context.CancelCauseFunc
	aborted *api.Error    // set by Abort; later runs start aborted
	idle    chan struct{} // closed when the set empties; nil when no one waits
}

// ErrShuttingDown is the error of a control plane that is shutting down,
// for Close and Abort; message says what became of the task.
func ErrShuttingDown(message string) *api.Error {
	return &api.Error{Code: api.CodeShuttingDown, Message: message, Retriable: true, RetryAfterMS: 1000}
}

// Close stops admission: Submit refuses every later job with e, and every
// queued job fails with e now. Running jobs are left alone (see Drain and
// Abort). It returns how many queued jobs it failed; closing twice fails
// only what was queued meanwhile (nothing).
func (d *Dispatcher) Close(e *api.Error) int {
	d.closed.CompareAndSwap(nil, e)
	n := 0
	for _, it := range d.opts.Queue.Items() {
		j := it.Value.(*Job)
		if d.opts.Queue.Remove(j.ID) { // else placed or cancelled meanwhile
			d.fits(j.ID)
			j.failed <- copyErr(e)
			n++
		}
	}
	d.opts.Metrics.queueDepth(d.opts.Queue)
	return n
}

// Closed reports whether Close was called.
func (d *Dispatcher) Closed() bool { return d.closed.Load() != nil }

// closedErr is a copy of Close's error, nil while open.
func (d *Dispatcher) closedErr() *api.Error {
	if e := d.closed.Load(); e != nil {
		return copyErr(e)
	}
	return nil
}

func copyErr(e *api.Error) *api.Error { c := *e; return &c }

// Running is the number of jobs in Execute: waiting for their placement or
// holding a pool.
func (d *Dispatcher) Running() int {
	d.runs.mu.Lock()
	defer d.runs.mu.Unlock()
	return len(d.runs.cancels)
}

// Drain waits until no job is in Execute, or ctx ends (its error then).
func (d *Dispatcher) Drain(ctx context.Context) error {
	d.runs.mu.Lock()
	if len(d.runs.cancels) == 0 {
		d.runs.mu.Unlock()
		return nil
	}
	if d.runs.idle == nil {
		d.runs.idle = make(chan struct{})
	}
	idle := d.runs.idle
	d.runs.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Abort stops every job in Execute, and any that starts later: their
// engine requests are closed, their slots given back, and Execute returns
// e (no retry). It returns how many it stopped.
func (d *Dispatcher) Abort(e *api.Error) int {
	d.runs.mu.Lock()
	defer d.runs.mu.Unlock()
	if d.runs.aborted == nil {
		d.runs.aborted = e
	}
	for _, cancel := range d.runs.cancels {
		cancel(d.runs.aborted)
	}
	return len(d.runs.cancels)
}

// track counts an Execute in progress; its context ends on Abort, with
// the abort's error as its cause. done must be called when it returns.
func (d *Dispatcher) track(ctx context.Context) (_ context.Context, done func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &d.runs
	r.mu.Lock()
	id := r.next
	r.next++
	r.cancels[id] = cancel
	if r.aborted != nil {
		cancel(r.aborted)
	}
	r.mu.Unlock()
	return ctx, func() {
		cancel(nil)
		r.mu.Lock()
		delete(r.cancels, id)
		if len(r.cancels) == 0 && r.idle != nil {
			close(r.idle)
			r.idle = nil
		}
		r.mu.Unlock()
	}
}

// aborted returns the error of an Abort that ended ctx (a copy), or nil.
func aborted(ctx context.Context) *api.Error {
	if ctx.Err() == nil {
		return nil
	}
	var e *api.Error
	if errors.As(context.Cause(ctx), &e) {
		return copyErr(e)
	}
	return nil
}
