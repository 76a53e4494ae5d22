// Package agent is pool-managerd's behaviour: its HTTP routes (SPEC §4) and,
// in the cloud profile, its life cycle against the control plane — register
// with capped exponential backoff and jitter, heartbeat pool and GPU state,
// re-register at once on a 404, and on shutdown send a final draining
// heartbeat and deregister.
//
// The pool table (package pool) is the single source of pool state; the
// handoff watcher writes it, the routes and heartbeats read it.
package agent
