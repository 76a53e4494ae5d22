package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
)

// V2Request is what a v2 task asks of the engine.
type V2Request struct {
	Prompt    string
	MaxTokens int
	Seed      *int64
}

// Runner executes v2 tasks: waits for placement, streams the engine's
// tokens into the task's events, retries once before the first token.
type Runner struct {
	d       *Dispatcher
	engines *http.Client
	log     *slog.Logger
	metrics *Metrics
	running sync.WaitGroup // tasks started and not yet ended
}

// NewRunner returns a runner whose engine requests go through engines (a
// client with connection reuse).
func NewRunner(d *Dispatcher, engines *http.Client, log *slog.Logger) *Runner {
	return &Runner{d: d, engines: engines, log: log, metrics: d.opts.Metrics}
}

type startedEvent struct {
	QueuePosition    int    `json:"queue_position"`
	PredictedStartMS int64  `json:"predicted_start_ms"`
	NodeID           string `json:"node_id"`
	PoolID           string `json:"pool_id"`
}

type tokenEvent struct {
	T string `json:"t"`
	I int    `json:"i"`
}

type metricsEvent struct {
	QueueWaitMS        int64   `json:"queue_wait_ms"`
	TTFTMS             float64 `json:"ttft_ms"`
	PromptTokens       int     `json:"prompt_tokens"`
	PromptMS           float64 `json:"prompt_ms"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
	Retried            bool    `json:"retried"`
}

type endEvent struct {
	TokensOut    int     `json:"tokens_out"`
	DecodeTimeMS int64   `json:"decode_time_ms"`
	DecodeMS     float64 `json:"decode_ms"`
}

// Start runs the task in its own goroutine; the job must have been
// submitted.
func (r *Runner) Start(t *Task, j *Job, req V2Request) {
	r.running.Add(1)
	go func() {
		defer r.running.Done()
		r.run(t, j, req)
	}()
}

// Wait waits until every task Start started has its final event, or ctx
// ends (its error then).
func (r *Runner) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) run(t *Task, j *Job, req V2Request) {
	admitted := time.Now()
	var ttft time.Duration
	var final engine.CompletionChunk
	pl, res, apiErr := r.d.Execute(t.Context(), j, t.SessionID, func(ctx context.Context, pl Placement) Result {
		var res Result
		res, ttft, final = r.stream(ctx, t, pl, req, admitted, j)
		return res
	})
	if apiErr != nil {
		if apiErr.Code == CodeCancelled {
			r.cancelled(t)
			return
		}
		t.Fail(apiErr)
		r.metrics.TaskEnded(outcomeOf(apiErr.Code))
		return
	}
	var refused *permanentError
	switch {
	case res.Outcome == Succeeded:
		tm := timing(final)
		t.Emit("metrics", metricsEvent{
			QueueWaitMS: pl.Waited.Milliseconds(), TTFTMS: float64(ttft.Microseconds()) / 1000, PromptTokens: final.TokensEvaluated,
			PromptMS: tm.PromptMS, PredictedPerSecond: tm.PredictedPerSecond, Retried: pl.Retried,
		})
		t.End(endEvent{TokensOut: res.Obs.Tokens, DecodeTimeMS: res.Obs.End.Sub(res.Obs.Sent).Milliseconds(), DecodeMS: tm.PredictedMS})
		r.metrics.TaskEnded("completed")
	case t.Context().Err() != nil:
		r.cancelled(t)
	case errors.As(res.Err, &refused):
		t.Fail(&api.Error{Code: api.CodeInvalidParams, Message: refused.Error(), Engine: "llamacpp"})
		r.metrics.TaskEnded("engine_error")
	default:
		r.log.WarnContext(t.Context(), "engine lost", "task_id", t.ID, "pool", pl.Key(), "tokens", res.Obs.Tokens, "err", res.Err)
		t.Fail(&api.Error{Code: api.CodeWorkerReset, Message: "the engine serving the task was lost: " + res.Err.Error(),
			Engine: "llamacpp", Retriable: true, RetryAfterMS: 1000})
		r.metrics.TaskEnded("worker_reset")
	}
}

func (r *Runner) cancelled(t *Task) {
	if t.Fail(&api.Error{Code: CodeCancelled, Message: "task cancelled"}) {
		r.metrics.TaskEnded("cancelled")
	}
}

func timing(c engine.CompletionChunk) engine.Timings {
	if c.Timings == nil {
		return engine.Timings{}
	}
	return *c.Timings
}

// stream runs the task on the placed engine, emitting started and token
// events. It returns the attempt's result, the task's time to first token
// since admission, and the engine's final chunk.
func (r *Runner) stream(ctx context.Context, t *Task, p Placement, req V2Request, admitted time.Time, j *Job) (res Result, ttft time.Duration, final engine.CompletionChunk) {
	ctx, span := r.d.opts.Tracer.Start(ctx, "stream", trace.WithAttributes(
		attribute.String("llorch.task_id", t.ID),
		attribute.String("llorch.node_id", p.Candidate.NodeID),
		attribute.String("llorch.pool_id", p.Candidate.Pool.PoolID)))
	tokens := 0
	defer func() {
		span.SetAttributes(attribute.Int("llorch.tokens_out", tokens), attribute.Float64("llorch.ttft_ms", float64(ttft.Microseconds())/1000))
		if res.Err != nil {
			span.RecordError(res.Err)
			span.SetStatus(codes.Error, res.Err.Error())
		}
		span.End()
	}()
	ctx, dog, release := watch(ctx, r.d.firstByteLimit(p), r.d.opts.StallTimeout)
	defer release()
	c := &engine.Client{BaseURL: p.Candidate.Pool.URL, HTTP: r.engines, ReuseStreamConns: true}
	first := func() {
		t.Emit("started", startedEvent{QueuePosition: p.QueuePosition, PredictedStartMS: j.Predicted.Wait.Milliseconds(),
			NodeID: p.Candidate.NodeID, PoolID: p.Candidate.Pool.PoolID})
	}
	res.Obs.Sent = time.Now()
	final, err := c.Complete(ctx, engine.CompletionRequest{Prompt: req.Prompt, NPredict: req.MaxTokens, Seed: req.Seed},
		func(ch engine.CompletionChunk) error {
			dog.alive()
			if tokens == 0 {
				first()
				res.Obs.FirstByte = time.Now()
				ttft = res.Obs.FirstByte.Sub(admitted)
				r.metrics.FirstToken(p.Candidate.NodeID, p.Candidate.Pool.PoolID, ttft, j.Predicted.TTFT, j.Trace)
				res.Delivered = true
			}
			t.Emit("token", tokenEvent{T: ch.Content, I: tokens})
			tokens++
			return nil
		}, nil)
	res.Obs.End = time.Now()
	res.Obs.Tokens = tokens
	if final.Timings != nil {
		timingsObservation(&res.Obs, *final.Timings)
	}
	res.Err = err
	var se *engine.StatusError
	switch {
	case err == nil:
		if tokens == 0 {
			first() // a task that generated nothing still started
		}
		res.Outcome = Succeeded
	case errors.As(err, &se) && se.StatusCode == http.StatusBadRequest:
		// The engine refused the request itself (e.g. context exceeded):
		// another pool would refuse it too. Report it, no retry.
		res.Outcome, res.Err = Abandoned, &permanentError{se}
	default:
		if cause := stalled(ctx); cause != nil {
			res.Err = cause // said of the engine, not "context canceled"
		}
		res.Outcome = EngineFailed
	}
	return res, ttft, final
}

type permanentError struct{ err *engine.StatusError }

func (e *permanentError) Error() string { return e.err.Error() }

func outcomeOf(code string) string {
	switch code {
	case api.CodeQueueFullDropLRU:
		return "evicted"
	case api.CodeDeadlineUnmet:
		return "deadline"
	case api.CodeModelNotAvailable, api.CodePoolUnavailable, api.CodeNodeUnavailable:
		return "unavailable"
	case api.CodeShuttingDown:
		return "shutdown"
	}
	return "error"
}
