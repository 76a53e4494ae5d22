package registry

import (
	"time"

	"github.com/llorch/llorch/api"
)

// Journal is told of every change this registry makes on its own — a
// registration, heartbeat or deregistration this process received — so a
// store shared by several control planes (package etcdstore) can publish
// it. Changes applied from that store (Apply*) are not journaled. Calls
// are made outside the registry's lock, on the request's goroutine: they
// must not block.
type Journal interface {
	Registered(Registration)
	Heartbeat(nodeID string, l Liveness)
	Deregistered(nodeID string)
}

// Registration is what a node's registration leaves: kept until the node
// deregisters, whatever its liveness.
type Registration struct {
	Request      api.RegisterRequest `json:"request"`
	RegisteredAt time.Time           `json:"registered_at"`
}

// Liveness is a node's last heartbeat and what it said.
type Liveness struct {
	Status        string          `json:"status"` // online or draining
	LastHeartbeat time.Time       `json:"last_heartbeat"`
	Interval      time.Duration   `json:"interval_ns,omitempty"`
	Pools         []api.PoolState `json:"pools,omitempty"`
	GPUs          []api.GPUState  `json:"gpus,omitempty"`
}

// SetJournal makes j hear of this registry's own changes from now on;
// set it before the registry serves.
func (r *Registry) SetJournal(j Journal) { r.journal = j }

// ApplyRegistration applies a registration another control plane received.
// An older one than the registry holds is ignored (false). A registration
// is proof of life: the node is online from it.
func (r *Registry) ApplyRegistration(reg Registration) bool {
	r.mu.Lock()
	from := statusNone
	old, ok := r.nodes[reg.Request.NodeID]
	if ok {
		if !reg.RegisteredAt.After(old.registeredAt) {
			r.mu.Unlock()
			return false
		}
		from = old.status
	}
	n := &node{req: reg.Request, status: api.StatusOnline, registeredAt: reg.RegisteredAt, lastHeartbeat: reg.RegisteredAt}
	if ok && old.lastHeartbeat.After(n.lastHeartbeat) {
		n.lastHeartbeat, n.status, n.pools, n.gpus, n.interval = old.lastHeartbeat, old.status, old.pools, old.gpus, old.interval
	}
	r.nodes[reg.Request.NodeID] = n
	to := n.status
	r.mu.Unlock()
	r.membersChanged()
	if from != to {
		r.metrics.transition(from, to)
	}
	return true
}

// ApplyLiveness applies a heartbeat another control plane received. One
// older than the registry's last for the node, or for a node it does not
// hold (its registration not yet seen), is ignored (false).
func (r *Registry) ApplyLiveness(nodeID string, l Liveness) bool {
	r.mu.Lock()
	n, ok := r.nodes[nodeID]
	if !ok || !l.LastHeartbeat.After(n.lastHeartbeat) {
		r.mu.Unlock()
		return false
	}
	from := n.status
	n.status, n.lastHeartbeat, n.interval, n.pools, n.gpus = l.Status, l.LastHeartbeat, l.Interval, l.Pools, l.GPUs
	r.mu.Unlock()
	if from == api.StatusOffline {
		r.membersChanged()
	} else {
		r.changed()
	}
	if from != l.Status {
		r.metrics.transition(from, l.Status)
		r.log.Info("node status changed", "node_id", nodeID, "from", from, "to", l.Status, "by", "another control plane")
	}
	return true
}

// ApplyDeregistration removes a node another control plane deregistered;
// false when the registry did not hold it.
func (r *Registry) ApplyDeregistration(nodeID string) bool {
	n, ok := r.remove(nodeID)
	if !ok {
		return false
	}
	r.metrics.transition(n.status, statusDeregistered)
	r.membersChanged()
	return true
}

// ApplyExpiry marks a node offline because the shared store expired its
// liveness (its lease ran out). A heartbeat received here since, within
// the timeout less slack, wins: the store's expiry then crossed that
// heartbeat's write on its way, and the write brings the node back in
// the store too. It reports whether the node went offline.
func (r *Registry) ApplyExpiry(nodeID string, slack time.Duration) bool {
	now := r.clock.Now()
	r.mu.Lock()
	n, ok := r.nodes[nodeID]
	if !ok || n.status == api.StatusOffline || now.Sub(n.lastHeartbeat) < r.timeout-slack {
		r.mu.Unlock()
		return false
	}
	from := n.status
	n.status = api.StatusOffline
	r.mu.Unlock()
	r.metrics.transition(from, api.StatusOffline)
	r.membersChanged()
	r.log.Warn("node offline: heartbeat timeout", "node_id", nodeID, "timeout", r.timeout, "by", "lease expiry")
	return true
}

// Retain removes every node not in keep, as after a fresh snapshot of the
// shared store (a watch that fell too far behind); it returns how many.
func (r *Registry) Retain(keep map[string]bool) int {
	r.mu.Lock()
	var gone []*node
	for id, n := range r.nodes {
		if !keep[id] {
			delete(r.nodes, id)
			gone = append(gone, n)
		}
	}
	r.mu.Unlock()
	for _, n := range gone {
		r.metrics.transition(n.status, statusDeregistered)
	}
	if len(gone) > 0 {
		r.membersChanged()
	}
	return len(gone)
}
