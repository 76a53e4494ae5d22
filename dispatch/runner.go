package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
)

// CodeCancelled ends a task cancelled by its client.
const CodeCancelled = "CANCELLED"

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
func (r *Runner) Start(t *Task, j *Job, req V2Request, predicted time.Duration) {
	go r.run(t, j, req, predicted)
}

func (r *Runner) run(t *Task, j *Job, req V2Request, predicted time.Duration) {
	ctx := t.Context()
	admitted := time.Now()
	retried := false
	for {
		p, apiErr, err := j.Wait(ctx)
		if err != nil {
			r.d.Abandon(j)
			r.cancelled(t)
			return
		}
		if apiErr != nil {
			t.Fail(apiErr)
			r.metrics.TaskEnded(outcomeOf(apiErr.Code))
			return
		}
		started := time.Now()
		tokens, ttft, final, err := r.stream(ctx, t, p, req, admitted, predicted)
		var refused *permanentError
		switch {
		case err == nil:
			r.d.Release(p, t.SessionID, Succeeded, time.Since(started))
			t.Emit("metrics", metricsEvent{
				QueueWaitMS: p.Waited.Milliseconds(), TTFTMS: float64(ttft.Microseconds()) / 1000, PromptTokens: final.TokensEvaluated,
				PromptMS: timing(final).PromptMS, PredictedPerSecond: timing(final).PredictedPerSecond, Retried: retried,
			})
			t.End(endEvent{TokensOut: tokens, DecodeTimeMS: time.Since(started).Milliseconds(), DecodeMS: timing(final).PredictedMS})
			r.metrics.TaskEnded("completed")
			return
		case ctx.Err() != nil:
			r.d.Release(p, t.SessionID, Abandoned, 0)
			r.cancelled(t)
			return
		case errors.As(err, &refused):
			r.d.Release(p, t.SessionID, Abandoned, 0)
			t.Fail(&api.Error{Code: api.CodeInvalidParams, Message: refused.Error(), Engine: "llamacpp"})
			r.metrics.TaskEnded("engine_error")
			return
		default:
			r.d.Release(p, t.SessionID, EngineFailed, 0)
			if tokens == 0 && !retried && r.d.Retry(j, p) {
				// The engine failed before the first token: nothing reached
				// the client, so the next-best pool can take the task.
				r.log.Warn("engine failed before the first token: retrying on the next pool", "task_id", t.ID, "pool", p.Key(), "err", err)
				retried = true
				continue
			}
			r.log.Warn("engine lost", "task_id", t.ID, "pool", p.Key(), "tokens", tokens, "err", err)
			t.Fail(&api.Error{Code: api.CodeWorkerReset, Message: "the engine serving the task was lost: " + err.Error(),
				Engine: "llamacpp", Retriable: true, RetryAfterMS: 1000})
			r.metrics.TaskEnded("worker_reset")
			return
		}
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
// events. It returns the tokens sent, the time to the first, and the
// engine's final chunk.
func (r *Runner) stream(ctx context.Context, t *Task, p Placement, req V2Request, admitted time.Time, predicted time.Duration) (tokens int, ttft time.Duration, final engine.CompletionChunk, err error) {
	ctx, span := r.d.opts.Tracer.Start(ctx, "stream", trace.WithAttributes(
		attribute.String("llorch.task_id", t.ID),
		attribute.String("llorch.node_id", p.Candidate.NodeID),
		attribute.String("llorch.pool_id", p.Candidate.Pool.PoolID)))
	defer func() {
		span.SetAttributes(attribute.Int("llorch.tokens_out", tokens), attribute.Float64("llorch.ttft_ms", float64(ttft.Microseconds())/1000))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	c := &engine.Client{BaseURL: p.Candidate.Pool.URL, HTTP: r.engines, ReuseStreamConns: true}
	first := func() {
		t.Emit("started", startedEvent{QueuePosition: p.QueuePosition, PredictedStartMS: predicted.Milliseconds(),
			NodeID: p.Candidate.NodeID, PoolID: p.Candidate.Pool.PoolID})
	}
	final, err = c.Complete(ctx, engine.CompletionRequest{Prompt: req.Prompt, NPredict: req.MaxTokens, Seed: req.Seed},
		func(ch engine.CompletionChunk) error {
			if tokens == 0 {
				first()
				ttft = time.Since(admitted)
				r.metrics.FirstToken(p.Candidate.Pool.PoolID, ttft)
			}
			t.Emit("token", tokenEvent{T: ch.Content, I: tokens})
			tokens++
			return nil
		}, nil)
	if err == nil && tokens == 0 {
		first() // a task that generated nothing still started
	}
	var se *engine.StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusBadRequest {
		// The engine refused the request itself (e.g. context exceeded):
		// another pool would refuse it too. Report it, no retry.
		return tokens, ttft, final, &permanentError{se}
	}
	return tokens, ttft, final, err
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
	}
	return "error"
}
