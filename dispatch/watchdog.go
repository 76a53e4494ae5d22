package dispatch

import (
	"context"
	"errors"
	"time"
)

// errStalled is the cause of an engine request cut because the engine
// went silent: a wedged llama-server holds its client forever otherwise.
var errStalled = errors.New("the engine sent nothing for too long (--engine-stall-timeout)")

// watchdog cuts an engine request whose engine sends nothing for too
// long: first before its first byte (a wedged engine that took the
// connection), then between two (a stream that stalled).
type watchdog struct {
	t       *time.Timer
	between time.Duration
}

// watch returns a context for one engine request, cancelled with errStalled
// when its first byte takes longer than first, or when the watchdog goes
// unfed for between after that (between 0: never), and the function that
// releases it.
func watch(ctx context.Context, first, between time.Duration) (context.Context, *watchdog, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{between: between}
	if between > 0 {
		w.t = time.AfterFunc(max(first, between), func() { cancel(errStalled) })
	}
	return ctx, w, func() {
		if w.t != nil {
			w.t.Stop()
		}
		cancel(nil)
	}
}

// alive feeds the watchdog: the engine sent something.
func (w *watchdog) alive() {
	if w.t != nil {
		w.t.Reset(w.between)
	}
}

// stalled reports why ctx was cut for silence, nil if it was not.
func stalled(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return cause
	}
	return nil
}

// firstByteLimit is how long a placed task may wait for its engine's first
// byte: the stall limit, or four times the task's predicted time to first
// token on that pool when that is longer (a long prompt's prefill is no
// stall).
func (d *Dispatcher) firstByteLimit(pl Placement) time.Duration {
	return max(d.opts.StallTimeout, 4*(pl.Estimate.TTFT-pl.Estimate.Wait))
}
