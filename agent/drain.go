package agent

import (
	"context"
	"time"
)

// DrainPool drains one pool (POST /pools/{id}/drain): it takes no new work
// at once (the table marks it draining, and a heartbeat tells the control
// plane). When the engines the agent started for it have no request in
// flight, or when deadline passes (DrainTimeout if deadline <= 0), those
// engines are stopped, cutting what still runs, and the pool is marked
// stopped. A pool whose engines someone else started stays draining. It
// reports whether the pool exists; draining a pool again changes nothing.
func (d *Daemon) DrainPool(poolID string, deadline time.Duration) bool {
	if !d.pools.Drain(poolID) {
		return false
	}
	if deadline <= 0 {
		deadline = d.cfg.DrainTimeout
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing || d.draining[poolID] || d.sup == nil || !d.sup.Runs(poolID) {
		return true
	}
	d.draining[poolID] = true
	d.drainers.Add(1)
	go func() {
		defer d.drainers.Done()
		d.finishDrain(poolID, deadline)
	}()
	return true
}

// finishDrain waits for the pool's requests up to deadline, then stops its
// engines. If the agent begins shutting down meanwhile, the shutdown
// sequence takes the engines over.
func (d *Daemon) finishDrain(poolID string, deadline time.Duration) {
	log := d.log.With("pool_id", poolID)
	ctx, cancel := context.WithTimeout(d.drainCtx, deadline)
	err := d.sup.DrainPool(ctx, poolID)
	cancel()
	if d.drainCtx.Err() != nil {
		return
	}
	if err != nil {
		log.Warn("drain deadline passed: stopping the pool's engine, cutting its requests", "deadline", deadline, "err", err)
	}
	d.sup.Stop(poolID)
	d.pools.MarkStopped(poolID)
	log.Info("pool drained: engine stopped")
}
