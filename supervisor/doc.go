// Package supervisor launches and supervises the engines of a node agent's
// pools: it starts each engine (llama-server or the simulator) on a free
// loopback port with its log in the runtime dir, waits for /health, then
// announces it with a handoff file written atomically — which the handoff
// watcher turns into a ready pool. It probes the engine, restarts it after a
// crash with capped exponential backoff and jitter, opens a circuit breaker
// after repeated crashes, and clears the pool's last error once the engine
// is ready again. Drain and DrainPool wait for in-flight requests up to a
// deadline; Stop (one pool) and Shutdown (all) stop engines for good
// (SIGTERM, then SIGKILL).
//
// Each engine has one goroutine (a runner) that owns its process; the
// Supervisor only starts runners and tells them to stop.
package supervisor
