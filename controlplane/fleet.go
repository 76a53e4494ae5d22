package controlplane

import (
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/scheduler"
)

// RegistryFleet offers the registry's pools to placement (CLOUD profile).
type RegistryFleet struct {
	Registry *registry.Registry
	// Peers, with --registry etcd, are the tasks the other control planes
	// have in flight, by candidate key, and a version that changes with
	// them; nil alone.
	Peers func() (map[string]int, uint64)
}

var _ dispatch.Fleet = RegistryFleet{}

// Version changes with the registry (and the peers' tasks), so the
// dispatcher rebuilds its candidates only when the fleet changed.
func (f RegistryFleet) Version() uint64 {
	v := f.Registry.Version()
	if f.Peers != nil {
		_, pv := f.Peers()
		v += pv // both only grow: the sum changes when either does
	}
	return v
}

// Candidates implements dispatch.Fleet: one per ready replica of each pool
// (see replicaCandidates). Offline nodes are left out: they never receive
// work.
func (f RegistryFleet) Candidates() []scheduler.Candidate {
	nodes := f.Registry.List(false)
	n := 0
	for i := range nodes {
		for _, p := range nodes[i].Pools {
			n += max(1, len(p.Replicas))
		}
	}
	out := make([]scheduler.Candidate, 0, n)
	for i := range nodes {
		node := &nodes[i]
		for _, p := range node.Pools {
			out = replicaCandidates(out, scheduler.Candidate{
				NodeID: node.NodeID, NodeStatus: node.Status, Pool: p, GPUs: gpusOf(node.GPUs, p.DeviceMask),
			})
		}
	}
	if f.Peers != nil {
		if peers, _ := f.Peers(); len(peers) > 0 {
			for i := range out {
				// Foreign too: the dispatcher's books overlay only pools
				// this control plane has used.
				out[i].Peers = peers[out[i].Key()]
				out[i].Foreign = out[i].Peers
			}
		}
	}
	return out
}

// replicaCandidates appends pool candidate c to out as placement sees it:
// one candidate per ready replica, each with the replica's id, URL, engine
// version and slot counts (a pool's replicas are separate engines), or c
// itself when the pool lists no ready replica (an agent that predates
// replicas, or a pool not ready).
func replicaCandidates(out []scheduler.Candidate, c scheduler.Candidate) []scheduler.Candidate {
	replicas := c.Pool.Replicas
	c.Pool.Replicas = nil
	added := false
	for _, r := range replicas {
		if !r.Ready {
			continue
		}
		rc := c
		rc.ReplicaID = r.ReplicaID
		rc.Pool.URL, rc.Pool.EngineVersion = r.URL, r.EngineVersion
		rc.Pool.SlotsTotal, rc.Pool.SlotsFree = r.SlotsTotal, r.SlotsFree
		rc.Pool.RequestsDeferred, rc.Pool.SlotsObservedAt = r.RequestsDeferred, r.SlotsObservedAt
		rc.Reported = scheduler.Speed{DecodeTPS: r.DecodeTPS, PrefillTPS: r.PromptTPS}
		out = append(out, rc)
		added = true
	}
	if !added {
		out = append(out, c)
	}
	return out
}

// gpusOf picks a device mask's GPUs (all for an empty mask).
func gpusOf(gpus []api.GPUState, mask string) []api.GPUState {
	want := api.DeviceIndices(mask)
	if len(want) == 0 {
		return gpus
	}
	var out []api.GPUState
	for _, g := range gpus {
		for _, w := range want {
			if g.DeviceID == w {
				out = append(out, g)
			}
		}
	}
	return out
}

// LocalNodeID names the HOME profile's one node.
const LocalNodeID = "local"

// LocalFleet offers the pools of the control plane's own runtime dir (HOME
// profile): engines announced by handoff files on this machine.
type LocalFleet struct{ Pools *pool.Table }

var _ dispatch.Fleet = LocalFleet{}

// Version changes with the pool table, so the dispatcher rebuilds its
// candidates only when the engines changed.
func (f LocalFleet) Version() uint64 { return f.Pools.Version() }

// Candidates implements dispatch.Fleet: one per ready replica of each
// pool, as RegistryFleet's.
func (f LocalFleet) Candidates() []scheduler.Candidate {
	pools := f.Pools.Snapshot()
	out := make([]scheduler.Candidate, 0, len(pools))
	for _, p := range pools {
		out = replicaCandidates(out, scheduler.Candidate{NodeID: LocalNodeID, NodeStatus: api.StatusOnline, Pool: p})
	}
	return out
}
