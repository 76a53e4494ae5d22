// Package enginepoll reads the node agent's engines: every interval it asks
// each ready replica's engine for /metrics and /slots (at once, each on its
// own), keeps the last poll for the exporter's engine collector, and writes
// each replica's busy slots and deferred requests, dated, into the pool table
// (pool.Table.SetLoad), so heartbeats report live load.
//
// Locking: one mutex guards the last poll; readers get copies.
package enginepoll
