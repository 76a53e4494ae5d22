package dispatch

import (
	"context"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
)

// CodeCancelled ends a task cancelled by its client.
const CodeCancelled = "CANCELLED"

// Attempt runs a placed job on its engine and delivers the answer to the
// client: the v2 task runner and the OpenAI proxy are two of them.
type Attempt func(ctx context.Context, pl Placement) Result

// Result is how an attempt ended.
type Result struct {
	Outcome Outcome
	// Delivered is set once any of the answer reached the client: the job
	// can no longer move to another pool.
	Delivered bool
	// Err says why an attempt did not succeed.
	Err error
	// Obs is what the attempt showed of the pool's speed.
	Obs Observation
}

// Execute is the one path from placement to a finished job, for every
// front end: it waits for j's placement, runs attempt there, and gives the
// slot back (which places the next queued task). When the engine fails
// before anything reached the client, the job is placed again, avoiding
// that pool, once. It returns the last placement and its result, or the
// error that ended the job before an attempt could (no pool, deadline,
// eviction, Close; CodeCancelled when ctx ended first). A job stopped by
// Abort returns Abort's error with its placement and result (Delivered
// says whether the client had any of the answer).
func (d *Dispatcher) Execute(ctx context.Context, j *Job, session string, attempt Attempt) (Placement, Result, *api.Error) {
	ctx, done := d.track(ctx)
	defer done()
	retried := false
	for {
		pl, apiErr, err := j.Wait(ctx)
		if err != nil {
			d.Abandon(j)
			if stop := aborted(ctx); stop != nil {
				return Placement{}, Result{}, stop
			}
			return Placement{}, Result{}, &api.Error{Code: CodeCancelled, Message: "task cancelled"}
		}
		if apiErr != nil {
			return Placement{}, Result{}, apiErr
		}
		pl.Retried = retried
		res := attempt(ctx, pl)
		if ctx.Err() != nil && res.Outcome != Succeeded {
			res.Outcome = Abandoned // the client left, or Abort; the pool was fine
		}
		d.Release(pl, session, res.Outcome, res.Obs)
		if stop := aborted(ctx); stop != nil && res.Outcome != Succeeded {
			return pl, res, stop
		}
		if res.Outcome == EngineFailed && !res.Delivered && !retried && d.Retry(j, pl) {
			d.opts.Logger.WarnContext(ctx, "engine failed before answering: retrying on the next pool",
				"task_id", j.ID, "pool", pl.Key(), "err", res.Err)
			retried = true
			continue
		}
		return pl, res, nil
	}
}

// timingsObservation completes an observation with the engine's own
// timings, when its answer carried them.
func timingsObservation(o *Observation, t engine.Timings) {
	o.Tokens = t.PredictedN
	o.DecodeTime = time.Duration(t.PredictedMS * float64(time.Millisecond))
	o.PromptTokens = t.PromptN
	o.PromptTime = time.Duration(t.PromptMS * float64(time.Millisecond))
}
