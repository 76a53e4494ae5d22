package agent

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// shutdown is SPEC §4's sequence on SIGTERM/SIGINT. Every step runs even if
// an earlier one failed; the errors of the failed ones (the control-plane
// steps) are returned joined, each saying which step it was.
//
//  1. Stop accepting new work: every pool is marked draining (drains asked
//     over HTTP hand their engines over to this sequence).
//  2. Tell the control plane in a final heartbeat with "draining": true,
//     within ShutdownTimeout (cloud profile, once registered).
//  3. Wait until the engines the agent started have no request processing
//     or deferred, or DrainTimeout passes (logged: the requests left are cut
//     in step 5).
//  4. DELETE /v2/nodes/{id}, within ShutdownTimeout.
//  5. Stop the engines the agent started: SIGTERM, SIGKILL after 10s; their
//     handoff files are removed.
//
// Run then stops the HTTP server, the watcher and the pollers.
func (d *Daemon) shutdown(agentDone <-chan struct{}) error {
	d.log.Info("shutting down: draining pools", "drain_timeout", d.cfg.DrainTimeout, "shutdown_timeout", d.cfg.ShutdownTimeout)
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	d.stopDrains()
	d.pools.DrainAll()
	d.drainers.Wait()
	if agentDone != nil {
		<-agentDone // the heartbeat loop has stopped
	}

	var errs []error
	if d.agent != nil {
		errs = append(errs, d.step("final draining heartbeat", d.agent.Drain))
	}
	d.waitInFlight()
	if d.agent != nil {
		errs = append(errs, d.step("deregistration", d.agent.Deregister))
	}
	if d.sup != nil {
		d.sup.Shutdown()
		d.log.Info("engines stopped")
	}
	return errors.Join(errs...)
}

// step runs one control-plane step of the shutdown within ShutdownTimeout.
func (d *Daemon) step(name string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		return fmt.Errorf("shutdown: %s (--shutdown-timeout %v): %w", name, d.cfg.ShutdownTimeout, err)
	}
	return nil
}

// waitInFlight waits for the started engines' requests, up to DrainTimeout.
// Reaching it is no failure: as the control plane's shutdown grace, it is
// the bound the operator chose; the requests still running are cut when the
// engines stop, and logged.
func (d *Daemon) waitInFlight() {
	if d.sup == nil {
		return
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout)
	defer cancel()
	if err := d.sup.Drain(ctx); err != nil {
		d.log.Warn("--drain-timeout passed with requests in flight: stopping the engines cuts them", "drain_timeout", d.cfg.DrainTimeout, "err", err)
		return
	}
	d.log.Info("in-flight requests done", "took", time.Since(began).Round(time.Millisecond))
}
