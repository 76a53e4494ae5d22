// Package pool is the node agent's pool registry: one entry per pool, fed by
// handoff files (one replica per file), drained by operators or shutdown
// (and marked stopped once the agent has stopped a drained pool's engines),
// and read by heartbeats, the HTTP status route and /metrics. Each replica is
// a separate engine with its own URL, slots and last engine poll; a snapshot
// lists the replicas and aggregates them into the pool's fields.
//
// Locking: one mutex guards the table; every read returns copies.
package pool
