// Package loadtest drives a control plane at fleet scale and checks that
// nothing is lost: it is `llorch loadtest`.
//
// One process holds N virtual node agents and their engines. Every engine
// is a simengine.Server, and one HTTP server on 127.0.0.1 serves them all
// under per-node paths (/n/<node>/<pool>/…) with every agent's /metrics
// and /health (/a/<node>/…), so 100,000 nodes need one listener. Each
// agent is a real api.Client with its own heartbeat timer (a heap of
// timers read by one goroutine and a pool of workers, as agent.Agent's
// loop: register, heartbeat, re-register on a 404), jitter, pools and GPU
// inventory; its /metrics is a real pool-managerd scrape with the node's
// ids and live values. Open-loop Poisson arrivals (loadgen.Arrivals) send
// streaming OpenAI requests and v2 tasks. A schedule of faults (ParseFaults)
// kills, freezes and drains nodes, hangs, fails and stalls engines, opens
// streams it never reads, sends malformed heartbeats, skews clocks, floods
// registrations, and restarts or kills the control plane. After the run
// the invariants are checked (invariants.go) and a Report is returned:
// the table for people, the JSON with a per-second series.
//
// Locking: each virtual node's mutable state (its mode, engines' faults,
// pools, call log) is under its own mutex, and every change closes the
// node's changed channel, on which requests held by a fault wait. The
// heartbeat heap has its own mutex; a node is in it at most once or held
// by one worker (its seq and busy fields say which). The traffic's
// counters are atomics; each request's record is written only by its own
// goroutine and read after all have ended.
package loadtest
