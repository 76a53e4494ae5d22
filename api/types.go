package api

import "time"

// RegisterRequest is the body of POST /v2/nodes/register.
type RegisterRequest struct {
	NodeID       string       `json:"node_id"`
	MachineID    string       `json:"machine_id"`
	Address      string       `json:"address"`
	Pools        []string     `json:"pools"`
	Capabilities Capabilities `json:"capabilities"`
	Version      string       `json:"version"`
}

// Capabilities describes a node's hardware at registration.
type Capabilities struct {
	GPUs          []GPUInfo `json:"gpus"`
	CPUCores      int       `json:"cpu_cores,omitempty"`
	RAMTotalBytes uint64    `json:"ram_total_bytes,omitempty"`
}

// GPUInfo is one GPU of a node's inventory.
type GPUInfo struct {
	DeviceID          int    `json:"device_id"`
	UUID              string `json:"uuid,omitempty"`
	Name              string `json:"name,omitempty"`
	VRAMTotalBytes    uint64 `json:"vram_total_bytes,omitempty"`
	ComputeCapability string `json:"compute_capability,omitempty"`
}

// RegisterResponse answers a successful registration.
type RegisterResponse struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
	NodeID  string `json:"node_id"`
}

// HeartbeatRequest is the body of POST /v2/nodes/{id}/heartbeat.
type HeartbeatRequest struct {
	Timestamp time.Time   `json:"timestamp"`
	Pools     []PoolState `json:"pools"`
	GPUs      []GPUState  `json:"gpus"`
	// Draining is set by an agent that is shutting down; the control plane
	// then reports the node as draining and places no new work on it.
	Draining bool `json:"draining,omitempty"`
}

// PoolState is one pool as a heartbeat reports it; the control plane keeps it
// as the node's pool snapshot.
type PoolState struct {
	PoolID         string   `json:"pool_id"`
	Ready          bool     `json:"ready"`
	Draining       bool     `json:"draining"`
	SlotsTotal     int      `json:"slots_total"`
	SlotsFree      int      `json:"slots_free"`
	VRAMTotalBytes uint64   `json:"vram_total_bytes"`
	VRAMFreeBytes  uint64   `json:"vram_free_bytes"`
	Engine         string   `json:"engine"`
	EngineVersion  string   `json:"engine_version"`
	URL            string   `json:"url"`
	Models         []string `json:"models"`
	// DeviceMask names the pool's GPUs (e.g. "0,1"); empty means all of
	// the node's GPUs.
	DeviceMask string `json:"device_mask,omitempty"`
	// RequestsDeferred is the requests the engines hold waiting for a
	// slot, as last polled.
	RequestsDeferred int `json:"requests_deferred,omitempty"`
	// SlotsObservedAt is when the engines were polled for slots_free and
	// requests_deferred (zero: not polled, the handoff files' counts).
	// The agent sends it in its own clock; the control plane, which knows
	// the heartbeat's timestamp in that clock, stores it in its own, so
	// clock skew between them does not date the report wrongly.
	SlotsObservedAt time.Time `json:"slots_observed_at,omitzero"`
	// Replicas are the pool's engines, one per handoff file, in the order
	// of their files; the fields above aggregate the ready ones. Absent
	// from agents that predate replicas: the pool is then one engine.
	Replicas []ReplicaState `json:"replicas,omitempty"`
}

// ReplicaState is one engine replica of a pool: placement sends tasks to
// each replica on its own.
type ReplicaState struct {
	// ReplicaID is unique within the pool: the handoff file's replica_id,
	// else taken from the file's name (pool-0_r1.json: r1).
	ReplicaID     string `json:"replica_id"`
	URL           string `json:"url"`
	Ready         bool   `json:"ready"`
	SlotsTotal    int    `json:"slots_total"`
	SlotsFree     int    `json:"slots_free"`
	EngineVersion string `json:"engine_version"`
	// RequestsDeferred and SlotsObservedAt are the last poll of the
	// replica's engine, as PoolState's are of the pool's engines.
	RequestsDeferred int       `json:"requests_deferred,omitempty"`
	SlotsObservedAt  time.Time `json:"slots_observed_at,omitzero"`
	// DecodeTPS and PromptTPS are the engine's own speeds since it
	// started (llamacpp:tokens_predicted_total over
	// tokens_predicted_seconds_total: one slot's tokens/s; prompt tokens
	// over prompt seconds), 0 when unknown: placement's seed for a pool
	// it has not measured, without scraping the agent.
	DecodeTPS float64 `json:"decode_tokens_per_second,omitempty"`
	PromptTPS float64 `json:"prompt_tokens_per_second,omitempty"`
}

// GPUState is live per-GPU state carried by a heartbeat.
type GPUState struct {
	DeviceID      int     `json:"device_id"`
	VRAMFreeBytes uint64  `json:"vram_free_bytes"`
	Utilization   float64 `json:"utilization"`
}

// HeartbeatResponse answers a heartbeat. NextHeartbeatMS tells the agent the
// longest interval the control plane wants between heartbeats.
type HeartbeatResponse struct {
	Success         bool  `json:"success"`
	NextHeartbeatMS int64 `json:"next_heartbeat_ms"`
}

// Node statuses, as GET /v2/nodes reports them.
const (
	StatusOnline   = "online"
	StatusDraining = "draining"
	StatusOffline  = "offline"
)

// NodeInfo is one node in GET /v2/nodes.
type NodeInfo struct {
	NodeID         string       `json:"node_id"`
	MachineID      string       `json:"machine_id"`
	Address        string       `json:"address"`
	Status         string       `json:"status"`
	RegisteredAt   time.Time    `json:"registered_at"`
	LastHeartbeat  time.Time    `json:"last_heartbeat"`
	HeartbeatAgeMS int64        `json:"heartbeat_age_ms"`
	Capabilities   Capabilities `json:"capabilities"`
	Version        string       `json:"version"`
	DeclaredPools  []string     `json:"declared_pools"`
	Pools          []PoolState  `json:"pools"`
	GPUs           []GPUState   `json:"gpus"`
}

// NodeList is the body of GET /v2/nodes.
type NodeList struct {
	Nodes []NodeInfo `json:"nodes"`
	Count int        `json:"count"`
}

// SDTargetGroup is one entry of Prometheus HTTP service discovery.
type SDTargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Health is the body of GET /health on both daemons.
type Health struct {
	Status  string `json:"status"` // ok, degraded (the shared registry is not well) or draining
	Version string `json:"version"`
	// Registry is the shared registry's backend (etcd), absent in memory
	// mode; RegistryCondition says what is wrong with it, absent when
	// nothing is.
	Registry          string `json:"registry,omitempty"`
	RegistryCondition string `json:"registry_condition,omitempty"`
}

// PoolStatus is the body of GET /pools/{id}/status on a node agent.
// Stopped says the pool drained (POST /pools/{id}/drain) and the agent
// stopped the engines it had started for it.
type PoolStatus struct {
	PoolID        string   `json:"pool_id"`
	Live          bool     `json:"live"`
	Ready         bool     `json:"ready"`
	Draining      bool     `json:"draining"`
	Stopped       bool     `json:"stopped"`
	SlotsTotal    int      `json:"slots_total"`
	SlotsFree     int      `json:"slots_free"`
	Engine        string   `json:"engine"`
	EngineVersion string   `json:"engine_version"`
	URL           string   `json:"url"`
	Models        []string `json:"models"`
	LastError     string   `json:"last_error"`
	// Replicas are the pool's engines (see PoolState.Replicas).
	Replicas []ReplicaState `json:"replicas,omitempty"`
}

// DrainRequest is the body of POST /pools/{id}/drain.
type DrainRequest struct {
	DeadlineMS int64 `json:"deadline_ms"`
}

// TaskRequest is the body of POST /v2/tasks.
type TaskRequest struct {
	TaskID     string         `json:"task_id"`
	SessionID  string         `json:"session_id"`
	Workload   string         `json:"workload"`
	ModelRef   string         `json:"model_ref"`
	Engine     string         `json:"engine"`
	Ctx        int            `json:"ctx"`
	Priority   string         `json:"priority"`
	MaxTokens  int            `json:"max_tokens"`
	DeadlineMS int64          `json:"deadline_ms"`
	Prompt     string         `json:"prompt"`
	Seed       *int64         `json:"seed"`
	Placement  *TaskPlacement `json:"placement"`
	// DeviceMask at the top level is taken as placement.device_mask (the
	// two may not differ): a mask in either place restricts the task to
	// pools on exactly those GPUs.
	DeviceMask string `json:"device_mask,omitempty"`
}

// TaskPlacement constrains where a task runs.
type TaskPlacement struct {
	Mode          string   `json:"mode"` // auto, pin, prefer
	PinPoolID     string   `json:"pin_pool_id"`
	NodeID        string   `json:"node_id"`
	PreferPools   []string `json:"prefer_pools"`
	AvoidPools    []string `json:"avoid_pools"`
	AllowFallback *bool    `json:"allow_fallback"`
	DeviceMask    string   `json:"device_mask"`
}

// TaskAccepted answers an admitted task (202).
type TaskAccepted struct {
	TaskID           string            `json:"task_id"`
	QueuePosition    int               `json:"queue_position"`
	PredictedStartMS int64             `json:"predicted_start_ms"`
	Streams          map[string]string `json:"streams"`
}

// Explanation is the body of GET /v2/placement/explain.
type Explanation struct {
	Model      string               `json:"model"`
	Scorers    map[string]int64     `json:"weights"`
	Candidates []ExplainedCandidate `json:"candidates"`
	Rejected   []ExplainedRejection `json:"rejected"`
}

// ExplainedCandidate is one ranked pool and its weighted score components.
type ExplainedCandidate struct {
	Rank   int    `json:"rank"`
	NodeID string `json:"node_id"`
	PoolID string `json:"pool_id"`
	// ReplicaID names the pool's replica: a pool with several replicas
	// is placed per replica. Empty for agents that predate replicas.
	ReplicaID  string           `json:"replica_id,omitempty"`
	Total      int64            `json:"total"`
	Components map[string]int64 `json:"components"`
	FreeSlots  int              `json:"free_slots"`
	InFlight   int              `json:"in_flight"`
	// MetricsAgeMS is the age of the scraped utilisation used; -1 if none
	// was fresh and registry state stood in.
	MetricsAgeMS int64 `json:"metrics_age_ms"`
	// Foreign is load the engines reported beyond this control plane's
	// own tasks; Waiting the tasks held here for the pool ahead of this
	// one; HasRoom whether a task sent now would be sent at once.
	Foreign  int             `json:"foreign"`
	Waiting  int             `json:"waiting"`
	HasRoom  bool            `json:"has_room"`
	Expected ExpectedLatency `json:"expected"`
}

// ExpectedLatency is a pool's predicted latency for the task, and the
// speed it was predicted from.
type ExpectedLatency struct {
	WaitMS    float64 `json:"wait_ms"`
	TTFTMS    float64 `json:"ttft_ms"`
	LatencyMS float64 `json:"latency_ms"`
	// SpeedSource is learned (from this control plane's tasks), engine
	// (the engine's own counters) or prior (the fleet's typical pool).
	SpeedSource string `json:"speed_source"`
	// DecodeTPS, PrefillTPS and Samples are the learned speed (0: none).
	DecodeTPS  float64 `json:"decode_tokens_per_second"`
	PrefillTPS float64 `json:"prefill_tokens_per_second"`
	Samples    int     `json:"samples"`
}

// ExplainedRejection is one pool a filter dropped.
type ExplainedRejection struct {
	NodeID    string `json:"node_id"`
	PoolID    string `json:"pool_id"`
	ReplicaID string `json:"replica_id,omitempty"`
	Filter    string `json:"filter"`
	Reason    string `json:"reason"`
}
