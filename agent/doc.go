// Package agent is pool-managerd, the node agent.
//
// Daemon (daemon.go) assembles it from a Config: the pool table (package
// pool) fed by the handoff watcher, the engines it launches (supervisor),
// the GPU source it picks and its staleness bound, with the simulated GPUs'
// load model (gpus.go), the engine poller (enginepoll), the exporter, the
// HTTP routes of SPEC §4 (http.go) and, in the cloud profile, the Agent.
// Run serves until its context ends, then shuts down in SPEC §4's order,
// returning the errors of the steps that failed (shutdown.go); DrainPool
// drains one pool up to a deadline, then stops its engines (drain.go).
//
// Agent (agent.go) is the life cycle against the control plane: register
// with capped exponential backoff and jitter, heartbeat pool and GPU state,
// re-register at once on a 404, back off and log an ERROR when the token
// is refused (401), and on shutdown send a final draining heartbeat and
// deregister. Inventory (inventory.go) turns the GPU readings into what
// registration and heartbeats carry, and PoolsWithVRAM adds each pool's GPU
// memory to the table for heartbeats and /metrics alike.
//
// The pool table is the single source of pool state: the handoff watcher
// and the supervisor write it, the engine poller writes live load into it,
// the routes, heartbeats and collectors read it.
package agent
