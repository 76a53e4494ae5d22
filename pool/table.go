package pool

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/handoff"
)

// Table holds the agent's pools. It is safe for concurrent use.
type Table struct {
	mu      sync.Mutex
	pools   map[string]*entry
	changes chan struct{}
	version atomic.Uint64
}

type entry struct {
	replicas  map[string]handoff.Handoff // by handoff file path
	draining  bool
	lastError string
	// load is the last poll of the pool's engines; while it is not Known
	// the handoff files' counts stand. replicasChanged is when a handoff
	// file last added, replaced or removed a replica: a poll that began
	// before it counted other engines.
	load            Load
	replicasChanged time.Time
}

// Load is what one poll of a pool's engines observed.
type Load struct {
	// Busy is the slots processing a request.
	Busy int
	// Deferred is the requests waiting for a free slot; 0 when the poll
	// could not tell (the engine's /metrics did not answer).
	Deferred int
	// At is when the engines were polled, in the agent's clock. The zero
	// time says the busy slots are unknown: the poll failed, or nothing
	// polled the pool yet.
	At time.Time
}

// Known reports whether l holds an observation.
func (l Load) Known() bool { return !l.At.IsZero() }

var _ handoff.Sink = (*Table)(nil)

// NewTable returns a table holding the declared pools, not ready until a
// handoff file announces an engine for them.
func NewTable(declared []string) *Table {
	t := &Table{
		pools:   make(map[string]*entry),
		changes: make(chan struct{}, 1),
	}
	for _, id := range declared {
		t.pools[id] = &entry{replicas: map[string]handoff.Handoff{}}
	}
	return t
}

// Changes is signalled (coalesced) after every change of pool state, so the
// agent can heartbeat at once instead of at its next tick.
func (t *Table) Changes() <-chan struct{} { return t.changes }

// Version changes whenever a snapshot would: readers that cache one (the
// control plane's placement, in the HOME profile) rebuild only then.
func (t *Table) Version() uint64 { return t.version.Load() }

func (t *Table) changed() {
	t.version.Add(1)
	select {
	case t.changes <- struct{}{}:
	default:
	}
}

func (t *Table) entryLocked(poolID string) *entry {
	e, ok := t.pools[poolID]
	if !ok {
		e = &entry{replicas: map[string]handoff.Handoff{}}
		t.pools[poolID] = e
	}
	return e
}

// Upsert implements handoff.Sink. A file that changes pool_id moves its
// replica to the new pool. The last poll of a pool whose replicas change
// no longer describes its engines: the handoff files' counts stand until
// the next one.
func (t *Table) Upsert(path string, h handoff.Handoff) {
	t.mu.Lock()
	for id, e := range t.pools {
		if id != h.PoolID {
			e.removeLocked(path)
		}
	}
	e := t.entryLocked(h.PoolID)
	e.replicas[path] = h
	e.forgetLoadLocked()
	t.mu.Unlock()
	t.changed()
}

// Remove implements handoff.Sink.
func (t *Table) Remove(path string) {
	t.mu.Lock()
	for _, e := range t.pools {
		e.removeLocked(path)
	}
	t.mu.Unlock()
	t.changed()
}

// removeLocked drops the replica of a handoff file, and with it the last
// poll, which counted that replica's engine.
func (e *entry) removeLocked(path string) {
	if _, ok := e.replicas[path]; ok {
		delete(e.replicas, path)
		e.forgetLoadLocked()
	}
}

func (e *entry) forgetLoadLocked() {
	e.load = Load{}
	e.replicasChanged = time.Now()
}

// Drain marks a pool draining: it takes no new work. It reports whether the
// pool exists.
func (t *Table) Drain(poolID string) bool {
	t.mu.Lock()
	e, ok := t.pools[poolID]
	if ok {
		e.draining = true
	}
	t.mu.Unlock()
	if ok {
		t.changed()
	}
	return ok
}

// DrainAll marks every pool draining (shutdown).
func (t *Table) DrainAll() {
	t.mu.Lock()
	for _, e := range t.pools {
		e.draining = true
	}
	t.mu.Unlock()
	t.changed()
}

// SetLastError records the last error seen for a pool (engine crash, probe
// failure), reported by its status route.
func (t *Table) SetLastError(poolID, msg string) {
	t.mu.Lock()
	t.entryLocked(poolID).lastError = msg
	t.mu.Unlock()
}

// SetLoad records a poll of a pool's engines: its busy slots and deferred
// requests, and when they were observed. A load that is not Known (the poll
// failed) falls back to the handoff files' counts. A poll that began before
// the pool's replicas last changed is ignored: it counted other engines.
// Unknown pools are ignored.
func (t *Table) SetLoad(poolID string, l Load) {
	if !l.Known() {
		l = Load{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.pools[poolID]
	if !ok || (l.Known() && l.At.Before(e.replicasChanged)) {
		return
	}
	e.load = l
	t.version.Add(1)
}

// IDs returns the pool ids, sorted.
func (t *Table) IDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]string, 0, len(t.pools))
	for id := range t.pools {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Status returns one pool's status.
func (t *Table) Status(poolID string) (api.PoolStatus, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.pools[poolID]
	if !ok {
		return api.PoolStatus{}, false
	}
	s := e.state(poolID)
	return api.PoolStatus{
		PoolID:        poolID,
		Live:          len(e.replicas) > 0,
		Ready:         s.Ready,
		Draining:      s.Draining,
		SlotsTotal:    s.SlotsTotal,
		SlotsFree:     s.SlotsFree,
		Engine:        s.Engine,
		EngineVersion: s.EngineVersion,
		URL:           s.URL,
		Models:        s.Models,
		LastError:     e.lastError,
	}, true
}

// Snapshot returns every pool as a heartbeat reports it, sorted by id.
func (t *Table) Snapshot() []api.PoolState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]api.PoolState, 0, len(t.pools))
	for id, e := range t.pools {
		out = append(out, e.state(id))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PoolID < out[j].PoolID })
	return out
}

// state folds the replicas into one pool view. Identity fields (engine, url)
// come from the replica whose file sorts first, so the view is stable.
func (e *entry) state(id string) api.PoolState {
	s := api.PoolState{PoolID: id, Draining: e.draining, Models: []string{}}
	paths := make([]string, 0, len(e.replicas))
	for p := range e.replicas {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	seen := map[string]bool{}
	for _, p := range paths {
		h := e.replicas[p]
		s.SlotsTotal += h.SlotsTotal
		s.SlotsFree += h.SlotsFree
		if s.URL == "" {
			s.Engine, s.EngineVersion, s.URL, s.DeviceMask = h.Engine, h.EngineVersion, h.URL, h.DeviceMask
		}
		if m := h.Model.Name(); m != "" && !seen[m] {
			seen[m] = true
			s.Models = append(s.Models, m)
		}
	}
	s.Ready = len(paths) > 0
	if e.load.Known() && s.Ready {
		s.SlotsFree = max(0, s.SlotsTotal-e.load.Busy)
		s.RequestsDeferred = max(0, e.load.Deferred)
		s.SlotsObservedAt = e.load.At
	}
	return s
}
