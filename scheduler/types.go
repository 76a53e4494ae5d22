package scheduler

import (
	"time"

	"github.com/llorch/llorch/api"
)

// Candidate is one pool of one node, with everything the plugins may read.
// A pool with several replicas (separate engines) is one candidate per
// replica: ReplicaID names it, and Pool's URL and slot counts are the
// replica's.
type Candidate struct {
	NodeID     string
	NodeStatus string
	// ReplicaID is empty for a pool from an agent that predates replicas.
	ReplicaID string
	Pool      api.PoolState
	// GPUs of the pool (its device mask), from the node's heartbeat.
	GPUs []api.GPUState

	// InFlight is the tasks this control plane has sent to the pool and
	// not yet seen end: exact, counted on send and on the stream's end.
	InFlight int
	// Foreign is load the pool's engines reported beyond this control
	// plane's own tasks (another client, another replica), until the
	// report ages out; at least Peers.
	Foreign int
	// Peers is the tasks the other control planes sharing the fleet
	// (--registry etcd) have in flight on the pool, as they last
	// published: fresher than an engine's report, which counts them too.
	Peers int
	// Waiting is the tasks this control plane holds in its queue for the
	// pool, ahead of the one being placed: they go first when a slot
	// frees.
	Waiting int
	// Speed is the pool's learned speed (see Speed).
	Speed Speed
	// Reported is the speed the engine's own counters gave in its
	// heartbeat (DecodeTPS and PrefillTPS; 0: unknown): the seed of a pool
	// never measured when no fresh utilisation reading has it.
	Reported Speed
	// Util is scraped utilisation; Util.At is zero when none is fresh.
	Util Utilization
	// RecentFailure is when a dispatch to this pool last failed.
	RecentFailure time.Time
}

// Key names a candidate uniquely: "node/pool", or "node/pool/replica" for
// a replica.
func (c *Candidate) Key() string {
	if c.ReplicaID == "" {
		return c.PoolKey()
	}
	return c.NodeID + "/" + c.Pool.PoolID + "/" + c.ReplicaID
}

// PoolKey names the candidate's pool, "node/pool", the same for each of
// its replicas.
func (c *Candidate) PoolKey() string { return c.NodeID + "/" + c.Pool.PoolID }

// hasKey reports whether k is c.Key() or c.PoolKey() (a pool's key names
// every replica of it), without building the keys.
func (c *Candidate) hasKey(k string) bool {
	n, p := len(c.NodeID), len(c.Pool.PoolID)
	if len(k) < n+1+p || k[n] != '/' || k[:n] != c.NodeID || k[n+1:n+1+p] != c.Pool.PoolID {
		return false
	}
	rest := k[n+1+p:]
	return rest == "" || (c.ReplicaID != "" && len(rest) == 1+len(c.ReplicaID) && rest[0] == '/' && rest[1:] == c.ReplicaID)
}

// Load is the tasks ahead of a new one on the pool: running or queued in
// its engines, this control plane's and others', and held here for it.
func (c *Candidate) Load() int { return c.InFlight + c.Foreign + c.Waiting }

// FreeSlots is the pool's slots that no task holds or waits for.
func (c *Candidate) FreeSlots() int { return max(0, c.Pool.SlotsTotal-c.Load()) }

// HasRoom reports whether a task sent now would run at once, or wait in
// the engine behind fewer than backlog others.
func (c *Candidate) HasRoom(backlog int) bool { return c.Load() < c.Pool.SlotsTotal+backlog }

// Utilization is what the metrics (embedded scraper or Prometheus) say
// about a pool.
type Utilization struct {
	At time.Time
	// GPUUtilization is the mean of the pool's GPUs, 0-1; NaN if unknown.
	GPUUtilization float64
	// FreeVRAMBytes of the pool's GPUs; NaN if unknown.
	FreeVRAMBytes float64
	// RequestsDeferred and RequestsProcessing are the engine's queue.
	RequestsDeferred   float64
	RequestsProcessing float64
	// TokenRate is the engine's measured generation speed of one slot,
	// tokens/s; NaN if unknown.
	TokenRate float64
	// PromptRate is the engine's measured prompt processing speed,
	// tokens/s; NaN if unknown.
	PromptRate float64
}

// Request is what placement needs to know of a task.
type Request struct {
	TaskID    string
	SessionID string
	Model     string
	// PromptTokens is the prompt's length, estimated (no tokenizer here).
	PromptTokens int
	// MaxTokens is the most tokens the task generates; 0: not set.
	MaxTokens int
	// Placement constraints (SPEC §5 "placement"). PreferPools and
	// AvoidPools name pools by pool id or by "node/pool" key (every
	// replica of the pool), or one replica by "node/pool/replica" key.
	Mode          string // auto, pin, prefer
	PinPoolID     string
	NodeID        string
	PreferPools   []string
	AvoidPools    []string
	AllowFallback bool
	// DeviceMask, if set, must equal the pool's.
	DeviceMask string
}

// Status is a plugin's verdict; nil is success.
type Status struct {
	// Reason is why a pool does not fit (Filter) — a constant string, so
	// the hot path does not allocate.
	Reason string
	// Err is set when the plugin itself failed.
	Err error
}

// Unfit returns a "does not fit" status.
func Unfit(reason string) *Status { return &Status{Reason: reason} }

// State is per-decision data shared by plugins, computed once per decision
// by the framework before filters run.
type State struct {
	Now time.Time
	// StaleAfter bounds the age of Utilization a plugin may trust.
	StaleAfter time.Duration
	// AffinityPool is the pool key that served the request's session last.
	AffinityPool string
	// TaskTokens stands for a task's length when it sets no max_tokens:
	// the fleet's learned mean.
	TaskTokens int
	// Prior is the speed assumed of a pool nothing is known of.
	Prior Speed
	// TTFTWeight weighs time to first token in Estimate.Cost (0: the
	// default).
	TTFTWeight float64
	// BestCost is the lowest Estimate.Cost among the feasible
	// candidates, for ExpectedLatency's relative score.
	BestCost time.Duration
	avoid    poolSet
	prefer   poolSet
}

// poolSet is a set of pools named by pool id, "node/pool" key (every
// replica of the pool) or "node/pool/replica" key (that replica), looked up
// without building the candidate's key (which would allocate).
type poolSet struct {
	ids      map[string]bool
	keys     map[poolKey]bool
	replicas map[replicaKey]bool
}

type poolKey struct{ node, pool string }

type replicaKey struct{ node, pool, replica string }

func newPoolSet(names []string) poolSet {
	s := poolSet{ids: make(map[string]bool, len(names))}
	for _, n := range names {
		s.ids[n] = true
		// Every way n splits into node "/" pool, and into node "/" pool
		// "/" replica, so that a key matches exactly when it equals
		// Candidate.PoolKey or Candidate.Key.
		for i := range len(n) {
			if n[i] != '/' {
				continue
			}
			if s.keys == nil {
				s.keys = map[poolKey]bool{}
			}
			s.keys[poolKey{n[:i], n[i+1:]}] = true
			for j := i + 1; j < len(n); j++ {
				if n[j] != '/' {
					continue
				}
				if s.replicas == nil {
					s.replicas = map[replicaKey]bool{}
				}
				s.replicas[replicaKey{n[:i], n[i+1 : j], n[j+1:]}] = true
			}
		}
	}
	return s
}

func (s poolSet) empty() bool { return len(s.ids) == 0 }

// has reports whether c's pool id, pool key or replica key is in the set.
func (s poolSet) has(c *Candidate) bool {
	return s.ids[c.Pool.PoolID] || s.keys[poolKey{c.NodeID, c.Pool.PoolID}] ||
		(c.ReplicaID != "" && s.replicas[replicaKey{c.NodeID, c.Pool.PoolID, c.ReplicaID}])
}

// prefers reports whether c is one of the task's prefer_pools, named by
// pool id or, like avoid_pools, by "node/pool" key.
func (s *State) prefers(c *Candidate) bool { return s.prefer.has(c) }

// Fresh reports whether u is recent enough to use.
func (s *State) Fresh(u Utilization) bool {
	return !u.At.IsZero() && s.Now.Sub(u.At) <= s.StaleAfter
}
