// Package dispatch turns admitted tasks into running ones. The Dispatcher
// holds the admission queue and the exact book of this control plane's
// tasks on every pool: a slot is taken when a task is sent and given back
// when its answer ends, and giving one back runs a placement pass at once.
// Passes also run when a task is submitted and on a 100 ms tick (deadlines,
// a pool that turned ready, foreign load ageing out); heartbeats do not
// wake it. Placement offers queued tasks to the scheduler in priority
// order; a task whose best pool is full waits for it. The books also keep
// the load engines report beyond this control plane's own tasks, each
// pool's learned speed (from its completed tasks) and last failure, and
// the session affinity map. Books are kept by candidate key, so a pool
// with several replicas has one per replica (node/pool/replica); the
// exported llorch_placement_pool_* series sum them per pool.
//
// Execute is the one path from placement to a finished task: wait, send,
// release, and retry once on the next-best pool when the engine failed
// before anything reached the client. Runner (v2 tasks, events kept for
// late subscribers) and Proxy (OpenAI routes, bytes passed through as they
// arrive) are its two front ends.
//
// Shutdown (shutdown.go) is three calls: Close ends admission and every
// queued job, Drain waits for the running ones, Abort stops those left,
// each Execute then returning the abort's error for its front end to
// report. Execute calls in progress are tracked under their own mutex,
// never held with mu or passMu.
package dispatch
