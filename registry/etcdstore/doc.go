// Package etcdstore shares a control plane's node registry with the other
// replicas of orchestratord through etcd (--registry etcd).
//
// Every replica keeps its own registry.Registry in memory — placement and
// the HTTP API read only that — and the Store keeps it in step with etcd:
//
//   - what this replica receives (registrations, heartbeats,
//     deregistrations) reaches the Store as the registry's Journal and is
//     written behind, coalesced per node, by one writer: a slow or absent
//     etcd never slows a heartbeat;
//   - what the others write reaches it through one watch of the prefix,
//     after a snapshot (a replica that starts late, or whose watch fell
//     behind a compaction, reads the whole fleet first).
//
// Keys, under the prefix (default /llorch/):
//
//	nodes/<id>/registration  the registration; no lease: an offline node is
//	                         remembered until it deregisters
//	nodes/<id>/state         the last heartbeat (status, pools, GPUs); on a
//	                         lease, so etcd deletes it when heartbeats stop
//
// Liveness is the lease: each replica grants one lease a second with a
// TTL of the node timeout plus a second, and each write of a node's state
// attaches it to the newest. A node whose heartbeats stop keeps its last
// lease, which etcd expires between the timeout and a second and a half
// after its last heartbeat; the state key's deletion, seen by every
// replica's watch, marks it offline everywhere. No replica sweeps for
// stale nodes and none leads: etcd expires leases. While etcd cannot be
// reached a replica marks nobody offline (it cannot know), keeps placing
// on what it has, says so in /health, llorch_registry_etcd_up and its
// log, and writes what it held back once etcd answers.
package etcdstore
