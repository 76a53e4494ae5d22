// Package pool is the node agent's pool registry: one entry per pool, fed by
// handoff files (one replica per file), drained by operators or shutdown, and
// read by heartbeats, the HTTP status route and /metrics.
//
// Locking: one mutex guards the table; every read returns copies.
package pool
