package registry

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llorch/llorch/api"
)

// ErrUnknownNode is returned for a heartbeat or deregistration of a node the
// registry does not hold; the agent must re-register.
var ErrUnknownNode = errors.New("unknown node")

// statusNone is the "from" of a first registration and the "to" of a
// deregistration in llorch_node_status_transitions_total.
const (
	statusNone         = "none"
	statusDeregistered = "deregistered"
)

// Options configure a Registry.
type Options struct {
	// Timeout is how long a node may go without a heartbeat before it is
	// marked offline.
	Timeout time.Duration
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Registry holds the fleet's nodes. It is safe for concurrent use.
type Registry struct {
	clock   Clock
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics
	version atomic.Uint64 // bumped on every change, for caches
	members atomic.Uint64 // bumped when Addresses would change
	journal Journal       // nil: nothing shared

	mu    sync.RWMutex
	nodes map[string]*node
}

type node struct {
	req           api.RegisterRequest
	status        string
	registeredAt  time.Time
	lastHeartbeat time.Time
	pools         []api.PoolState // replaced whole, never mutated
	gpus          []api.GPUState  // replaced whole, never mutated
	// interval is the node's heartbeat interval as observed: a moving
	// average of the gaps between its heartbeats (0 before the second).
	interval time.Duration
}

// observeInterval folds one gap between heartbeats into the average; a
// gap after an outage (offline) is not an interval and is not passed in.
// The first gap sets it, then each moves it a quarter of the way: a changed
// --heartbeat-interval shows within a few beats, a late one barely.
func observeInterval(avg, gap time.Duration) time.Duration {
	if avg <= 0 {
		return gap
	}
	return avg + (gap-avg)/4
}

// New returns an empty registry.
func New(opts Options) *Registry {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{
		clock:   opts.Clock,
		timeout: opts.Timeout,
		log:     opts.Logger,
		metrics: newMetrics(),
		nodes:   make(map[string]*node),
	}
}

// Timeout is how long a node may go without a heartbeat before it is
// offline (exported as llorch_node_timeout_seconds, for alert rules).
func (r *Registry) Timeout() time.Duration { return r.timeout }

// NextHeartbeat is the interval the registry asks agents to keep: a third of
// the timeout, so two heartbeats can be lost before a node goes offline.
func (r *Registry) NextHeartbeat() time.Duration { return r.timeout / 3 }

// Register adds a node or overwrites the one with the same node_id. A
// registration is proof of life: the node is online from now on.
func (r *Registry) Register(req api.RegisterRequest) {
	if req.MachineID == "" {
		req.MachineID = req.NodeID
	}
	now := r.clock.Now()
	r.mu.Lock()
	from := statusNone
	if old, ok := r.nodes[req.NodeID]; ok {
		from = old.status
	}
	r.nodes[req.NodeID] = &node{
		req:           req,
		status:        api.StatusOnline,
		registeredAt:  now,
		lastHeartbeat: now,
	}
	r.mu.Unlock()
	if r.journal != nil {
		r.journal.Registered(Registration{Request: req, RegisteredAt: now})
	}
	r.metrics.registrations.ok.Inc()
	r.metrics.transition(from, api.StatusOnline)
	r.membersChanged()
	if from == api.StatusOffline || from == statusNone {
		r.log.Info("node registered", "node_id", req.NodeID, "address", req.Address, "previous_status", from)
	}
}

// Heartbeat records a heartbeat and its pool and GPU snapshots. It brings an
// offline node back online. The registry takes ownership of hb's slices.
// Each pool's SlotsObservedAt is moved from the agent's clock into the
// registry's (see datePolls).
func (r *Registry) Heartbeat(nodeID string, hb api.HeartbeatRequest) error {
	now := r.clock.Now()
	datePolls(hb.Pools, hb.Timestamp, now)
	to := api.StatusOnline
	if hb.Draining || allDraining(hb.Pools) {
		to = api.StatusDraining
	}
	r.mu.Lock()
	n, ok := r.nodes[nodeID]
	if !ok {
		r.mu.Unlock()
		r.metrics.heartbeats.unknown.Inc()
		return ErrUnknownNode
	}
	from := n.status
	n.status = to
	if gap := now.Sub(n.lastHeartbeat); from == api.StatusOnline || from == api.StatusDraining {
		n.interval = observeInterval(n.interval, gap)
	}
	n.lastHeartbeat = now
	n.pools = hb.Pools
	n.gpus = hb.GPUs
	interval := n.interval
	r.mu.Unlock()
	if r.journal != nil {
		r.journal.Heartbeat(nodeID, Liveness{Status: to, LastHeartbeat: now, Interval: interval, Pools: hb.Pools, GPUs: hb.GPUs})
	}
	r.metrics.heartbeats.ok.Inc()
	if from == api.StatusOffline {
		r.membersChanged()
	} else {
		r.changed()
	}
	if from != to {
		r.metrics.transition(from, to)
		r.log.Info("node status changed", "node_id", nodeID, "from", from, "to", to)
	}
	return nil
}

// MaxPollAge bounds the age the registry gives a pool's engine poll: a
// heartbeat that says its poll is older is taken as this old.
const MaxPollAge = time.Minute

// datePolls translates each pool's SlotsObservedAt from the agent's clock
// into the registry's. The agent dates its poll and its heartbeat
// (sent) with the same clock, so their difference is the poll's age
// whatever the skew between the clocks; the poll is then that age before
// the heartbeat was received. The age is clamped to [0, MaxPollAge]: a poll
// dated after its heartbeat is taken as fresh, a heartbeat without a
// timestamp as carrying a fresh poll. An undated poll (the engines were not
// polled) stays undated. Each replica's poll is translated the same way.
func datePolls(pools []api.PoolState, sent, received time.Time) {
	for i := range pools {
		p := &pools[i]
		p.SlotsObservedAt = datePoll(p.SlotsObservedAt, sent, received)
		for j := range p.Replicas {
			r := &p.Replicas[j]
			r.SlotsObservedAt = datePoll(r.SlotsObservedAt, sent, received)
		}
	}
}

// datePoll translates one poll's date (see datePolls).
func datePoll(at, sent, received time.Time) time.Time {
	if at.IsZero() {
		return at
	}
	var age time.Duration
	if !sent.IsZero() {
		age = min(max(sent.Sub(at), 0), MaxPollAge)
	}
	return received.Add(-age)
}

func (r *Registry) changed() {
	r.version.Add(1)
}

// membersChanged is changed for a change of who is in the fleet and not
// offline: what Addresses lists.
func (r *Registry) membersChanged() {
	r.members.Add(1)
	r.version.Add(1)
}

// Membership changes whenever Addresses would: a registration, a
// deregistration, a node going offline or coming back. Heartbeats of
// nodes that stay online leave it, so a cache of Addresses keyed by it is
// rebuilt per change, not per heartbeat.
func (r *Registry) Membership() uint64 { return r.members.Load() }

// allDraining reports whether a node with pools has every pool draining.
func allDraining(pools []api.PoolState) bool {
	if len(pools) == 0 {
		return false
	}
	for i := range pools {
		if !pools[i].Draining {
			return false
		}
	}
	return true
}

// Deregister removes a node.
func (r *Registry) Deregister(nodeID string) error {
	n, ok := r.remove(nodeID)
	if !ok {
		return ErrUnknownNode
	}
	if r.journal != nil {
		r.journal.Deregistered(nodeID)
	}
	r.metrics.transition(n.status, statusDeregistered)
	r.membersChanged()
	r.log.Info("node deregistered", "node_id", nodeID)
	return nil
}

// remove deletes a node from the map and returns what it was.
func (r *Registry) remove(nodeID string) (*node, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[nodeID]
	if ok {
		delete(r.nodes, nodeID)
	}
	return n, ok
}

// ExpireStale marks offline every node whose last heartbeat is older than the
// timeout and returns their ids, sorted.
func (r *Registry) ExpireStale() []string {
	now := r.clock.Now()
	var expired []string
	// Find candidates under the read lock so a sweep of a large fleet does
	// not stall heartbeats; re-check each under the write lock.
	r.mu.RLock()
	for id, n := range r.nodes {
		if n.status != api.StatusOffline && now.Sub(n.lastHeartbeat) > r.timeout {
			expired = append(expired, id)
		}
	}
	r.mu.RUnlock()
	if len(expired) == 0 {
		return nil
	}
	kept := expired[:0]
	r.mu.Lock()
	for _, id := range expired {
		n, ok := r.nodes[id]
		if !ok || n.status == api.StatusOffline || now.Sub(n.lastHeartbeat) <= r.timeout {
			continue
		}
		r.metrics.transition(n.status, api.StatusOffline)
		n.status = api.StatusOffline
		kept = append(kept, id)
	}
	r.mu.Unlock()
	sort.Strings(kept)
	if len(kept) > 0 {
		r.membersChanged()
	}
	for _, id := range kept {
		r.log.Warn("node offline: heartbeat timeout", "node_id", id, "timeout", r.timeout)
	}
	return kept
}

// RunStaleChecker calls ExpireStale every interval until ctx is done.
func (r *Registry) RunStaleChecker(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.ExpireStale()
		}
	}
}

// Get returns one node.
func (r *Registry) Get(nodeID string) (api.NodeInfo, bool) {
	now := r.clock.Now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	n, ok := r.nodes[nodeID]
	if !ok {
		return api.NodeInfo{}, false
	}
	return n.info(nodeID, now), true
}

// List returns the nodes sorted by id; offline ones only with includeOffline.
func (r *Registry) List(includeOffline bool) []api.NodeInfo {
	now := r.clock.Now()
	r.mu.RLock()
	out := make([]api.NodeInfo, 0, len(r.nodes))
	for id, n := range r.nodes {
		if n.status == api.StatusOffline && !includeOffline {
			continue
		}
		out = append(out, n.info(id, now))
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// Address is where a node's agent listens.
type Address struct{ NodeID, URL string }

// Addresses lists the agents of the nodes that are not offline, in no
// order, without copying their pools and GPUs as List does.
func (r *Registry) Addresses() []Address {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Address, 0, len(r.nodes))
	for id, n := range r.nodes {
		if n.status != api.StatusOffline {
			out = append(out, Address{NodeID: id, URL: n.req.Address})
		}
	}
	return out
}

// Version changes whenever a node registers, heartbeats, deregisters or
// expires; caches of List compare it to know they are stale.
func (r *Registry) Version() uint64 { return r.version.Load() }

// Len returns the number of registered nodes, offline ones included.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.nodes)
}

func (n *node) info(id string, now time.Time) api.NodeInfo {
	pools := n.pools
	if pools == nil {
		pools = []api.PoolState{}
	}
	return api.NodeInfo{
		NodeID:         id,
		MachineID:      n.req.MachineID,
		Address:        n.req.Address,
		Status:         n.status,
		RegisteredAt:   n.registeredAt,
		LastHeartbeat:  n.lastHeartbeat,
		HeartbeatAgeMS: now.Sub(n.lastHeartbeat).Milliseconds(),
		Capabilities:   n.req.Capabilities,
		Version:        n.req.Version,
		DeclaredPools:  n.req.Pools,
		Pools:          pools,
		GPUs:           n.gpus,
	}
}
