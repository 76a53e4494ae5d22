// Package dispatch turns admitted tasks into running ones. The Dispatcher
// holds the admission queue and, whenever a slot may have freed (a task
// ended, a heartbeat arrived, a tick), offers queued tasks to placement in
// priority order and hands each placed task its pool. It counts the tasks
// in flight per pool, so free slots are right between heartbeats, keeps
// failed pools out for a while, and remembers which pool served each
// session (KV-cache affinity).
//
// Runner (v2 tasks, events kept for late subscribers) and Proxy (OpenAI
// routes, bytes passed through as they arrive) execute placed tasks against
// the engines; both retry once on the next-best pool if an engine fails
// before the first token.
package dispatch
