package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/llorch/llorch/registry"
)

// Options configure a Store.
type Options struct {
	Client   *clientv3.Client
	Registry *registry.Registry
	// Prefix is where the fleet lives in etcd; default "/llorch/".
	Prefix string
	// Replica names this control plane in what it writes, so its watch
	// skips its own writes; default host-pid.
	Replica string
	Logger  *slog.Logger
}

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 100

// expirySlack is how recent a heartbeat received here must be for the
// deletion of the node's state (its lease expired) not to mark it offline:
// the write of that heartbeat is on its way and brings the key back.
const expirySlack = time.Second

// Store keeps a registry in step with etcd; see the package doc.
type Store struct {
	cli     *clientv3.Client
	reg     *registry.Registry
	prefix  string
	replica string
	log     *slog.Logger
	ttl     int64 // seconds: the node timeout, rounded up, plus one
	metrics *metrics

	mu      sync.Mutex
	pending map[string]*change // by node id, the newest change not yet written
	writing map[string]bool    // the nodes of the batch being written
	wake    chan struct{}

	peers peers // the other replicas' tasks in flight

	lease  atomic.Int64 // the newest lease, 0 before the first grant
	up     atomic.Bool  // the last call to etcd succeeded
	synced atomic.Bool  // a snapshot was read and the watch runs
	downMu sync.Mutex
	down   time.Time // when etcd stopped answering; zero while up
	reason string
}

// change is what is left to write for one node: the deletion of all it
// had (a deregistration), then its registration and its state.
type change struct {
	deregister bool
	reg        *registry.Registration
	live       *registry.Liveness
}

// New returns a Store for opts.Registry and makes it the registry's
// Journal. Run starts it.
func New(opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "/llorch/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.Replica == "" {
		host, _ := os.Hostname()
		opts.Replica = host + "-" + strconv.Itoa(os.Getpid())
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		cli: opts.Client, reg: opts.Registry, prefix: opts.Prefix, replica: opts.Replica, log: opts.Logger,
		ttl:     int64(math.Ceil(opts.Registry.Timeout().Seconds())) + 1,
		pending: make(map[string]*change), wake: make(chan struct{}, 1),
	}
	s.peers.by = make(map[string]map[string]int)
	s.metrics = newMetrics(s)
	opts.Registry.SetJournal(s)
	return s
}

// Registered implements registry.Journal: the registration, and the
// liveness it proves.
func (s *Store) Registered(reg registry.Registration) {
	s.enqueue(reg.Request.NodeID, func(c *change) {
		c.reg = &reg
		c.live = &registry.Liveness{Status: "online", LastHeartbeat: reg.RegisteredAt}
	})
}

// Heartbeat implements registry.Journal.
func (s *Store) Heartbeat(nodeID string, l registry.Liveness) {
	s.enqueue(nodeID, func(c *change) { c.live = &l })
}

// Deregistered implements registry.Journal.
func (s *Store) Deregistered(nodeID string) {
	s.enqueue(nodeID, func(c *change) { *c = change{deregister: true} })
}

func (s *Store) enqueue(nodeID string, edit func(*change)) {
	s.mu.Lock()
	c := s.pending[nodeID]
	if c == nil {
		c = &change{}
		s.pending[nodeID] = c
	}
	edit(c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Up reports whether etcd answered the Store's last call.
func (s *Store) Up() bool { return s.up.Load() }

// Synced reports whether the Store read the fleet from etcd and follows it.
func (s *Store) Synced() bool { return s.synced.Load() }

// Condition says, for /health, how the Store stands: "" when well, else
// why not.
func (s *Store) Condition() string {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	switch {
	case !s.down.IsZero():
		return fmt.Sprintf("etcd unreachable for %s (%s): placing on the last known fleet, marking no node offline",
			time.Since(s.down).Round(time.Second), s.reason)
	case !s.synced.Load():
		return "reading the fleet from etcd"
	}
	return ""
}

// setUp records whether etcd answered, logging each change.
func (s *Store) setUp(err error) {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	if err == nil {
		if !s.down.IsZero() {
			s.log.Info("etcd reachable again: writing back what was held, following the fleet", "down_for", time.Since(s.down).Round(time.Millisecond))
			s.down = time.Time{}
		}
		s.up.Store(true)
		return
	}
	s.reason = err.Error()
	if s.down.IsZero() {
		s.down = time.Now()
		s.log.Error("etcd unreachable: placing on the last known fleet, marking no node offline until it answers", "err", err)
	}
	s.up.Store(false)
}

// Run writes, grants leases and follows the fleet until ctx ends; then it
// writes what is still pending, for up to two seconds.
func (s *Store) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.runLeases(ctx) })
	wg.Go(func() { s.runWatch(ctx) })
	wg.Go(func() { s.runPeers(ctx) })
	s.runWriter(ctx)
	wg.Wait()
}

// runLeases grants a lease a second: the state written in that second
// hangs on it.
func (s *Store) runLeases(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if _, err := s.grant(ctx); err != nil && ctx.Err() == nil {
			s.setUp(fmt.Errorf("lease grant: %w", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) grant(ctx context.Context) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.cli.Grant(cctx, s.ttl)
	if err != nil {
		return 0, err
	}
	s.lease.Store(int64(resp.ID))
	return resp.ID, nil
}

// runWriter writes pending changes as they come: a batch is what
// gathered while the previous one was written.
func (s *Store) runWriter(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if batch := s.take(); len(batch) > 0 {
				if err := s.write(fctx, batch); err != nil {
					s.log.Warn("etcd: changes not written at shutdown", "nodes", len(batch), "err", err)
				}
			}
			cancel()
			return
		case <-s.wake:
		}
		batch := s.take()
		if len(batch) == 0 {
			continue
		}
		if err := s.write(ctx, batch); err != nil {
			if ctx.Err() != nil {
				continue
			}
			s.setUp(fmt.Errorf("write: %w", err))
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			s.poke()
			continue
		}
		backoff = 100 * time.Millisecond
		s.setUp(nil)
	}
}

func (s *Store) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns the pending changes and forgets them.
func (s *Store) take() map[string]*change {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	b := s.pending
	s.pending = make(map[string]*change, len(b))
	s.writing = make(map[string]bool, len(b))
	for id := range b {
		s.writing[id] = true
	}
	return b
}

// requeue puts back what a failed write did not write, under anything
// newer that came since.
func (s *Store) requeue(batch map[string]*change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, old := range batch {
		cur := s.pending[id]
		switch {
		case cur == nil:
			s.pending[id] = old
		case cur.deregister:
			// The newest says the node is gone: nothing older matters.
		default:
			merged := *old
			if cur.reg != nil {
				merged.reg = cur.reg
			}
			if cur.live != nil {
				merged.live = cur.live
			}
			s.pending[id] = &merged
		}
	}
}

// write writes a batch: deletions first, then registrations and states,
// in transactions of at most maxTxnOps operations; a node's operations
// stay in one. What failed is requeued.
func (s *Store) write(ctx context.Context, batch map[string]*change) (err error) {
	start := time.Now()
	defer func() {
		s.mu.Lock()
		s.writing = nil // written, or back in pending
		s.mu.Unlock()
		s.metrics.written(len(batch), time.Since(start), err)
	}()
	lease := clientv3.LeaseID(s.lease.Load())
	if lease == 0 {
		if lease, err = s.grant(ctx); err != nil {
			s.requeue(batch)
			return fmt.Errorf("lease grant: %w", err)
		}
	}
	var dels, puts []clientv3.Op
	var delIDs, putIDs []string
	for id, c := range batch {
		if c.deregister {
			dels = append(dels, clientv3.OpDelete(s.nodeKey(id, ""), clientv3.WithPrefix()))
			delIDs = append(delIDs, id)
		}
		if c.reg != nil {
			b, _ := json.Marshal(record{Replica: s.replica, Registration: c.reg})
			puts = append(puts, clientv3.OpPut(s.nodeKey(id, keyRegistration), string(b)))
			putIDs = append(putIDs, id)
		}
		if c.live != nil {
			b, _ := json.Marshal(record{Replica: s.replica, Liveness: c.live})
			puts = append(puts, clientv3.OpPut(s.nodeKey(id, keyState), string(b), clientv3.WithLease(lease)))
			putIDs = append(putIDs, id)
		}
	}
	done := map[string]bool{}
	commit := func(ops []clientv3.Op, ids []string) error {
		for i := 0; i < len(ops); {
			j := min(i+maxTxnOps, len(ops))
			for j < len(ops) && j > i && ids[j] == ids[j-1] { // keep a node's ops together
				j++
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := s.cli.Txn(cctx).Then(ops[i:j]...).Commit()
			cancel()
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				// The lease expired while etcd was away: take a new one.
				s.lease.Store(0)
			}
			if err != nil {
				return err
			}
			i = j
		}
		return nil
	}
	if err = commit(dels, delIDs); err != nil {
		s.requeue(batch)
		return err
	}
	for _, id := range delIDs {
		c := batch[id]
		c.deregister = false
		if c.reg == nil && c.live == nil {
			done[id] = true
		}
	}
	if err = commit(puts, putIDs); err != nil {
		left := map[string]*change{}
		for id, c := range batch {
			if !done[id] {
				left[id] = c
			}
		}
		s.requeue(left)
		return err
	}
	return nil
}

// Key suffixes of a node.
const (
	keyRegistration = "registration"
	keyState        = "state"
)

func (s *Store) nodeKey(id, suffix string) string {
	return s.prefix + "nodes/" + id + "/" + suffix
}

// parseKey splits a key under the prefix into node id and suffix.
func (s *Store) parseKey(key string) (id, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.prefix+"nodes/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// record is a value in etcd: who wrote it, and what.
type record struct {
	Replica      string                 `json:"replica"`
	Registration *registry.Registration `json:"registration,omitempty"`
	Liveness     *registry.Liveness     `json:"liveness,omitempty"`
}

// runWatch reads the fleet, then follows it; when the watch ends (a
// compaction passed it, etcd lost its leader) it reads the fleet again.
func (s *Store) runWatch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := s.snapshot(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.setUp(fmt.Errorf("read the fleet: %w", err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.setUp(nil)
		s.synced.Store(true)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range s.cli.Watch(wctx, s.prefix+"nodes/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := resp.Err(); err != nil {
				if ctx.Err() == nil {
					s.setUp(fmt.Errorf("watch: %w", err))
				}
				break
			}
			for _, ev := range resp.Events {
				s.apply(ev)
			}
			s.metrics.watchEvents.Add(float64(len(resp.Events)))
		}
		cancel()
		s.synced.Store(false)
	}
}

// snapshot reads every node under the prefix into the registry and
// returns the revision it read at.
func (s *Store) snapshot(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.prefix+"nodes/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	keep := map[string]bool{}
	live := map[string]bool{}
	var states []*mvccpb.KeyValue
	for _, kv := range resp.Kvs {
		id, suffix, ok := s.parseKey(string(kv.Key))
		if !ok {
			continue
		}
		switch suffix {
		case keyRegistration:
			var r record
			if json.Unmarshal(kv.Value, &r) != nil || r.Registration == nil {
				s.log.Warn("etcd: unreadable registration skipped", "key", string(kv.Key))
				continue
			}
			keep[id] = true
			s.reg.ApplyRegistration(*r.Registration)
		case keyState:
			states = append(states, kv)
		}
	}
	for _, kv := range states {
		id, _, _ := s.parseKey(string(kv.Key))
		var r record
		if json.Unmarshal(kv.Value, &r) != nil || r.Liveness == nil {
			continue
		}
		live[id] = true
		s.reg.ApplyLiveness(id, *r.Liveness)
	}
	// What this replica received and has not yet written is newer than
	// the snapshot: it stays.
	s.mu.Lock()
	for id, c := range s.pending {
		if !c.deregister {
			keep[id], live[id] = true, true
		}
	}
	for id := range s.writing {
		keep[id], live[id] = true, true
	}
	s.mu.Unlock()
	s.reg.Retain(keep)
	for id := range keep {
		if !live[id] {
			s.reg.ApplyExpiry(id, s.reg.Timeout()) // no state: its lease expired
		}
	}
	s.log.Info("etcd: fleet read", "nodes", len(keep), "online", len(live), "revision", resp.Header.Revision)
	return resp.Header.Revision, nil
}

// apply applies one watched event.
func (s *Store) apply(ev *clientv3.Event) {
	id, suffix, ok := s.parseKey(string(ev.Kv.Key))
	if !ok {
		return
	}
	if ev.Type == mvccpb.DELETE {
		switch suffix {
		case keyRegistration:
			s.reg.ApplyDeregistration(id)
		case keyState:
			s.reg.ApplyExpiry(id, expirySlack)
		}
		return
	}
	var r record
	if err := json.Unmarshal(ev.Kv.Value, &r); err != nil {
		s.log.Warn("etcd: unreadable value skipped", "key", string(ev.Kv.Key), "err", err)
		return
	}
	if r.Replica == s.replica {
		return // applied when it was received
	}
	switch {
	case suffix == keyRegistration && r.Registration != nil:
		s.reg.ApplyRegistration(*r.Registration)
	case suffix == keyState && r.Liveness != nil:
		s.reg.ApplyLiveness(id, *r.Liveness)
	}
}
