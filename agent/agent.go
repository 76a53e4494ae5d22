package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/backoff"
	"github.com/llorch/llorch/pool"
)

// ControlPlane is what the agent needs of the control plane; *api.Client
// implements it.
type ControlPlane interface {
	Register(ctx context.Context, req api.RegisterRequest) error
	Heartbeat(ctx context.Context, nodeID string, hb api.HeartbeatRequest) (api.HeartbeatResponse, error)
	Deregister(ctx context.Context, nodeID string) error
}

var _ ControlPlane = (*api.Client)(nil)

// GPUReporter supplies the live GPU facts of registration and heartbeats
// (the exporter's inventory of the GPU source).
type GPUReporter interface {
	GPUInfo() []api.GPUInfo
	GPUState() []api.GPUState
	// PoolVRAM sums the memory of a device mask's GPUs; ok is false
	// without fresh readings.
	PoolVRAM(mask string) (total, free uint64, ok bool)
}

// Options configure an Agent.
type Options struct {
	Registration api.RegisterRequest
	ControlPlane ControlPlane
	Pools        *pool.Table
	// GPUs may be nil: the node then reports no GPUs.
	GPUs              GPUReporter
	HeartbeatInterval time.Duration
	Backoff           backoff.Backoff
	// RequestTimeout bounds each call to the control plane made by Run,
	// and those of Drain and Deregister when their context has no
	// deadline.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Agent keeps a node registered and heartbeating.
type Agent struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	tracer  trace.Tracer
	// registered is owned by the Run goroutine, then by Shutdown.
	registered bool
}

// New builds an agent and registers its metrics.
func New(opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.Backoff.Base <= 0 {
		opts.Backoff = backoff.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Agent{opts: opts, log: opts.Logger, metrics: m, tracer: otel.Tracer("github.com/llorch/llorch/agent")}, nil
}

// Run registers and heartbeats until ctx is done. It returns only then.
func (a *Agent) Run(ctx context.Context) {
	attempt := 0
	interval := a.opts.HeartbeatInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-a.opts.Pools.Changes():
			// Pool state changed: tell the control plane now, not at the
			// next tick. A pending timer is simply superseded.
			if !a.registered {
				continue
			}
		}
		if !a.registered {
			if err := a.register(ctx); err != nil {
				d := a.retryDelay(attempt, err)
				attempt++
				a.logRetry("registration failed, retrying", attempt, d, err)
				timer.Reset(d)
				continue
			}
			attempt = 0
		}
		hctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
		next, err := a.heartbeat(hctx, false)
		cancel()
		switch {
		case errors.Is(err, api.ErrNotFound):
			// The control plane lost us (restarted, or expired and removed
			// us): register again right away.
			a.log.Warn("control plane does not know this node, re-registering")
			a.setRegistered(false)
			timer.Reset(0)
			continue
		case errors.Is(err, api.ErrUnauthorized):
			// The control plane no longer takes our token: register again,
			// which backs off and says why until it does.
			a.setRegistered(false)
			d := a.retryDelay(attempt, err)
			attempt++
			a.logRetry("heartbeat refused", attempt, d, err)
			timer.Reset(d)
			continue
		case err != nil && ctx.Err() == nil:
			a.log.Warn("heartbeat failed", "err", err)
		case err == nil && next > 0 && next < a.opts.HeartbeatInterval:
			interval = next // the control plane wants us more often
		}
		timer.Reset(interval)
	}
}

// retryDelay is the wait before the next registration attempt: the backoff
// of attempt, or its cap when the control plane refused the token, which
// no quick retry fixes.
func (a *Agent) retryDelay(attempt int, err error) time.Duration {
	b := a.opts.Backoff
	if errors.Is(err, api.ErrUnauthorized) {
		b.Base = b.Max
		attempt = 0
	}
	return b.Delay(attempt)
}

// logRetry logs a failed call to the control plane that will be retried: a
// refused token is an ERROR that names the setting to fix, anything else
// (the control plane down, a network error) a WARN.
func (a *Agent) logRetry(msg string, attempt int, retryIn time.Duration, err error) {
	if errors.Is(err, api.ErrUnauthorized) {
		a.log.Error("the control plane refused this agent's token (401): give it the control plane's token with --api-token/LLORCH_API_TOKEN",
			"attempt", attempt, "retry_in", retryIn.Round(time.Millisecond), "err", err)
		return
	}
	a.log.Warn(msg, "attempt", attempt, "retry_in", retryIn.Round(time.Millisecond), "err", err)
}

// callContext bounds one call to the control plane: by ctx's deadline where
// it has one (Run's RequestTimeout; the shutdown steps' --shutdown-timeout),
// else by RequestTimeout.
func (a *Agent) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.opts.RequestTimeout)
}

func (a *Agent) setRegistered(v bool) {
	a.registered = v
	a.metrics.registered.Set(boolValue(v))
}

func (a *Agent) register(ctx context.Context) (err error) {
	ctx, span := a.tracer.Start(ctx, "register", trace.WithAttributes(attribute.String("llorch.node_id", a.opts.Registration.NodeID)))
	defer func() { endSpan(span, err) }()
	rctx, cancel := context.WithTimeout(ctx, a.opts.RequestTimeout)
	defer cancel()
	req := a.opts.Registration
	req.Pools = a.opts.Pools.IDs()
	if a.opts.GPUs != nil {
		req.Capabilities.GPUs = a.opts.GPUs.GPUInfo()
	}
	if err := a.opts.ControlPlane.Register(rctx, req); err != nil {
		a.metrics.registrations.WithLabelValues("error").Inc()
		return err
	}
	a.metrics.registrations.WithLabelValues("ok").Inc()
	a.setRegistered(true)
	a.log.InfoContext(ctx, "registered with control plane", "address", req.Address, "pools", req.Pools)
	return nil
}

// heartbeat sends one heartbeat and returns the interval the control plane
// asks for.
func (a *Agent) heartbeat(ctx context.Context, draining bool) (next time.Duration, err error) {
	ctx, span := a.tracer.Start(ctx, "heartbeat", trace.WithAttributes(
		attribute.String("llorch.node_id", a.opts.Registration.NodeID), attribute.Bool("llorch.draining", draining)))
	defer func() { endSpan(span, err) }()
	rctx, cancel := a.callContext(ctx)
	defer cancel()
	hb := api.HeartbeatRequest{
		Timestamp: time.Now().UTC(),
		Pools:     PoolsWithVRAM{Pools: a.opts.Pools, GPUs: a.opts.GPUs}.Snapshot(),
		GPUs:      []api.GPUState{},
		Draining:  draining,
	}
	if a.opts.GPUs != nil {
		hb.GPUs = a.opts.GPUs.GPUState()
	}
	resp, err := a.opts.ControlPlane.Heartbeat(rctx, a.opts.Registration.NodeID, hb)
	switch {
	case errors.Is(err, api.ErrNotFound):
		a.metrics.heartbeats.WithLabelValues("unknown_node").Inc()
		return 0, err
	case err != nil:
		a.metrics.heartbeats.WithLabelValues("error").Inc()
		return 0, err
	}
	a.metrics.heartbeats.WithLabelValues("ok").Inc()
	return time.Duration(resp.NextHeartbeatMS) * time.Millisecond, nil
}

// Drain marks every pool draining and tells the control plane in a last
// heartbeat, so it places no new work here. Call it after Run has returned.
func (a *Agent) Drain(ctx context.Context) error {
	a.opts.Pools.DrainAll()
	if !a.registered {
		return nil
	}
	if _, err := a.heartbeat(ctx, true); err != nil {
		a.log.Warn("final draining heartbeat failed", "err", err)
		return err
	}
	return nil
}

// Deregister removes the node from the control plane.
func (a *Agent) Deregister(ctx context.Context) (err error) {
	if !a.registered {
		return nil
	}
	ctx, span := a.tracer.Start(ctx, "deregister", trace.WithAttributes(attribute.String("llorch.node_id", a.opts.Registration.NodeID)))
	defer func() { endSpan(span, err) }()
	dctx, cancel := a.callContext(ctx)
	defer cancel()
	if err := a.opts.ControlPlane.Deregister(dctx, a.opts.Registration.NodeID); err != nil {
		a.log.WarnContext(ctx, "deregistration failed", "err", err)
		return err
	}
	a.setRegistered(false)
	a.log.InfoContext(ctx, "deregistered from control plane")
	return nil
}

// Shutdown is Drain then Deregister, for an agent with no in-flight work to
// wait for in between. It tries both and returns their errors joined.
func (a *Agent) Shutdown(ctx context.Context) error {
	return errors.Join(a.Drain(ctx), a.Deregister(ctx))
}

// endSpan records err on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
