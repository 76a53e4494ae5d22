package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/tracing"
)

// shutdownBound bounds each step of shutdown after the grace: tasks
// stopped by Abort ending, and the HTTP server's connections closing.
// Neither waits on an engine or a client, so seconds are plenty.
const shutdownBound = 5 * time.Second

// Run serves until ctx ends, then shuts down gracefully and returns nil:
//
//  1. admission closes: new tasks and OpenAI requests get 503
//     SHUTTING_DOWN with Retry-After; /health says "draining";
//  2. every queued task ends at once: v2 tasks with an SSE error event
//     SHUTTING_DOWN, OpenAI requests with a 503 in OpenAI's shape;
//  3. running tasks may finish within Config.ShutdownGrace;
//  4. those still running are stopped: an SSE error event (v2) or an
//     OpenAI error event in the stream, SHUTTING_DOWN, retriable; their
//     engine requests are closed;
//  5. every task having ended, its event streams end, so the HTTP server
//     stops without waiting on them; background loops stop; traces are
//     flushed.
//
// The HTTP server keeps serving during steps 1-4, so clients are told
// why rather than refused a connection. Run returns an error only when
// serving failed; it is meant to be called once.
func (d *Daemon) Run(ctx context.Context) error {
	_, shutdownTracing, err := tracing.Setup(ctx, "orchestratord", d.cfg.Version, d.log)
	if err != nil {
		d.ln.Close()
		return fmt.Errorf("tracing (OTEL_* variables): %w", err)
	}
	defer func() {
		if err := shutdownTracing(context.Background()); err != nil {
			d.log.Warn("tracing shutdown", "err", err)
		}
	}()
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var loops sync.WaitGroup
	defer func() {
		stopBackground()
		loops.Wait()
		d.engines.CloseIdleConnections()
	}()
	for _, loop := range d.background {
		loops.Go(func() { loop(bg) })
	}
	if d.cfg.PprofAddr != "" {
		if err := config.ServePprof(bg, d.cfg.PprofAddr, d.log); err != nil {
			d.ln.Close()
			return err
		}
	}
	srv := config.NewServer(d.handler, d.log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(d.ln) }()
	d.logListening()

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	d.drain()
	d.stopServer(srv, served)
	d.log.Info("orchestratord stopped")
	return nil
}

func (d *Daemon) logListening() {
	attrs := []any{"addr", d.ln.Addr().String(), "version", d.cfg.Version, "cloud_profile", d.reg != nil,
		"shutdown_grace", d.cfg.ShutdownGrace}
	if d.cfg.APIToken != "" {
		attrs = append(attrs, "api_token_fingerprint", api.TokenFingerprint(d.cfg.APIToken))
	}
	d.log.Info("orchestratord listening", attrs...)
}

// drain runs steps 1-4 of Run's shutdown: every task has ended when it
// returns.
func (d *Daemon) drain() {
	grace := d.cfg.ShutdownGrace
	queued := d.dispatcher.Close(dispatch.ErrShuttingDown(
		"the control plane is shutting down: the task was not started; submit it again (to another control plane, or this one once restarted)"))
	d.log.Info("shutting down: admission closed, queued tasks ended", "queued", queued,
		"running", d.dispatcher.Running(), "grace", grace)

	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	err := d.dispatcher.Drain(graceCtx)
	cancel()
	if err != nil {
		n := d.dispatcher.Abort(dispatch.ErrShuttingDown(fmt.Sprintf(
			"the control plane is shutting down: the task was stopped after the shutdown grace (%v)", grace)))
		d.log.Warn("shutdown grace over: stopping the tasks still running", "stopped", n)
		bounded, cancel := context.WithTimeout(context.Background(), shutdownBound)
		if err := d.dispatcher.Drain(bounded); err != nil {
			d.log.Warn("tasks still running after they were stopped", "running", d.dispatcher.Running())
		}
		cancel()
	}
	bounded, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	if err := d.runner.Wait(bounded); err != nil {
		d.log.Warn("task runners still busy at shutdown", "err", err)
	}
	// A safety net: a task the runner could not end still ends, so that no
	// event stream waits for it.
	if n := d.tasks.FailUnfinished(dispatch.ErrShuttingDown("the control plane is shutting down")); n > 0 {
		d.log.Warn("tasks ended by the shutdown without their runner", "tasks", n)
	}
}

// stopServer stops the HTTP server: its event streams have ended, so
// Shutdown waits only for responses being written; a connection that
// still holds it past shutdownBound is closed.
func (d *Daemon) stopServer(srv *http.Server, served <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		d.log.Warn("http connections still open at shutdown: closing them", "err", err)
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn("http server", "err", err)
	}
}
