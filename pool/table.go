package pool

import (
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	replicas map[string]*replica // by handoff file path
	draining bool
	// stopped: drained, and the agent stopped the pool's engines.
	stopped   bool
	lastError string
}

// replica is one engine of a pool, announced by one handoff file.
type replica struct {
	// id is unique within the pool and fixed while the file stays (see
	// replicaIDLocked).
	id string
	h  handoff.Handoff
	// load is the last poll of the replica's engine; while it is not
	// Known the handoff file's counts stand. changed is when the file last
	// announced the replica: a poll that began before it may have counted
	// another engine.
	load    Load
	changed time.Time
}

// Load is what one poll of a replica's engine observed.
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
	// DecodeTPS and PromptTPS are the engine's speeds by its own
	// counters since it started (one slot's tokens/s generating; prompt
	// tokens/s); 0 when unknown.
	DecodeTPS, PromptTPS float64
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
		t.pools[id] = &entry{replicas: map[string]*replica{}}
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
		e = &entry{replicas: map[string]*replica{}}
		t.pools[poolID] = e
	}
	return e
}

// Upsert implements handoff.Sink. A file that changes pool_id moves its
// replica to the new pool. The last poll of a replica whose file changes
// no longer describes its engine: the file's counts stand until the next
// one. The pool's other replicas keep theirs.
func (t *Table) Upsert(path string, h handoff.Handoff) {
	t.mu.Lock()
	for id, e := range t.pools {
		if id != h.PoolID {
			delete(e.replicas, path)
		}
	}
	e := t.entryLocked(h.PoolID)
	e.replicas[path] = &replica{id: e.replicaIDLocked(path, h), h: h, changed: time.Now()}
	t.mu.Unlock()
	t.changed()
}

// replicaIDLocked names the replica of the file at path: its replica_id,
// else the file's name less ".json" and the "<pool_id>_" prefix, else the
// whole name less ".json", else r0, r1...: the first that is a valid id
// (it ends up in keys such as node/pool/replica) and that no other file of
// the pool uses.
func (e *entry) replicaIDLocked(path string, h handoff.Handoff) string {
	base := strings.TrimSuffix(filepath.Base(path), ".json")
	taken := func(id string) bool {
		for p, r := range e.replicas {
			if p != path && r.id == id {
				return true
			}
		}
		return false
	}
	for _, id := range []string{h.ReplicaID, strings.TrimPrefix(base, h.PoolID+"_"), base} {
		if api.ValidID(id) && !taken(id) {
			return id
		}
	}
	for n := 0; ; n++ {
		if id := "r" + strconv.Itoa(n); !taken(id) {
			return id
		}
	}
}

// Remove implements handoff.Sink: the file's replica goes, with its poll;
// the pool's other replicas stay.
func (t *Table) Remove(path string) {
	t.mu.Lock()
	for _, e := range t.pools {
		delete(e.replicas, path)
	}
	t.mu.Unlock()
	t.changed()
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

// MarkStopped records that a draining pool's engines were stopped by the
// agent (the end of a drain). It reports whether the pool exists.
func (t *Table) MarkStopped(poolID string) bool {
	t.mu.Lock()
	e, ok := t.pools[poolID]
	if ok {
		e.draining, e.stopped = true, true
	}
	t.mu.Unlock()
	if ok {
		t.changed()
	}
	return ok
}

// SetLastError records the last error seen for a pool (engine crash, probe
// failure), reported by its status route.
func (t *Table) SetLastError(poolID, msg string) {
	t.mu.Lock()
	t.entryLocked(poolID).lastError = msg
	t.mu.Unlock()
}

// SetLoad records a poll of one replica's engine: its busy slots and
// deferred requests, and when they were observed. A load that is not Known
// (the poll failed) falls back to the handoff file's counts. A poll that
// began before the replica's file last changed is ignored: it may have
// counted another engine. Unknown pools and replicas are ignored.
func (t *Table) SetLoad(poolID, replicaID string, l Load) {
	if !l.Known() {
		l = Load{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.pools[poolID]
	if !ok {
		return
	}
	for _, r := range e.replicas {
		if r.id != replicaID {
			continue
		}
		if l.Known() && l.At.Before(r.changed) {
			return
		}
		r.load = l
		t.version.Add(1)
		return
	}
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
		Stopped:       e.stopped && len(e.replicas) == 0,
		SlotsTotal:    s.SlotsTotal,
		SlotsFree:     s.SlotsFree,
		Engine:        s.Engine,
		EngineVersion: s.EngineVersion,
		URL:           s.URL,
		Models:        s.Models,
		LastError:     e.lastError,
		Replicas:      s.Replicas,
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

// state lists the replicas, in the order of their files, and folds them
// into one pool view: slots, free slots and deferred requests summed;
// polled when every replica was (as of the oldest poll). Identity fields
// (engine, url) come from the replica whose file sorts first, so the view
// is stable.
func (e *entry) state(id string) api.PoolState {
	s := api.PoolState{PoolID: id, Draining: e.draining, Models: []string{}}
	paths := make([]string, 0, len(e.replicas))
	for p := range e.replicas {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	seen := map[string]bool{}
	var oldest time.Time
	allPolled := len(paths) > 0
	for _, p := range paths {
		r := e.replicas[p]
		rs := r.state()
		s.Replicas = append(s.Replicas, rs)
		s.SlotsTotal += rs.SlotsTotal
		s.SlotsFree += rs.SlotsFree
		s.RequestsDeferred += rs.RequestsDeferred
		switch {
		case !r.load.Known():
			allPolled = false
		case oldest.IsZero() || r.load.At.Before(oldest):
			oldest = r.load.At
		}
		if s.URL == "" {
			s.Engine, s.EngineVersion, s.URL, s.DeviceMask = r.h.Engine, r.h.EngineVersion, r.h.URL, r.h.DeviceMask
		}
		if m := r.h.Model.Name(); m != "" && !seen[m] {
			seen[m] = true
			s.Models = append(s.Models, m)
		}
	}
	s.Ready = len(paths) > 0
	if allPolled {
		s.SlotsObservedAt = oldest
	}
	return s
}

// state is the replica as a heartbeat reports it: ready while its file
// is there, its free slots from its engine's last poll where known, else
// the file's.
func (r *replica) state() api.ReplicaState {
	rs := api.ReplicaState{
		ReplicaID: r.id, URL: r.h.URL, Ready: true, EngineVersion: r.h.EngineVersion,
		SlotsTotal: r.h.SlotsTotal, SlotsFree: r.h.SlotsFree,
	}
	if r.load.Known() {
		rs.SlotsFree = max(0, rs.SlotsTotal-r.load.Busy)
		rs.RequestsDeferred = max(0, r.load.Deferred)
		rs.SlotsObservedAt = r.load.At
		rs.DecodeTPS, rs.PromptTPS = r.load.DecodeTPS, r.load.PromptTPS
	}
	return rs
}
