// Package registry is the control plane's live node registry (SPEC §3):
// registration, heartbeats, deregistration, and the online → offline →
// online life cycle driven by heartbeat TTLs.
//
// Locking: one RWMutex guards the node map. Heartbeats hold the write lock
// only to swap a node's timestamps and snapshots; snapshots (pools, GPUs) are
// replaced whole and never mutated, so readers may keep the slices they got
// after the lock is released. Expiry is a sweep (ExpireStale) run by
// RunStaleChecker; tests call it directly with a fake Clock, so TTL logic is
// checked without sleeping.
//
// Time: the registry dates everything by its Clock. A heartbeat's pool
// snapshots say when the agent polled their engines in the agent's clock;
// Heartbeat moves those times into the registry's before storing them.
package registry
