package etcdstore

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Slot accounting across replicas: each replica publishes the tasks it
// has in flight per pool under inflight/<replica>, on a lease of its own
// (a replica that dies takes its counts with it within peerTTL), and
// follows the others' through a watch. The dispatcher counts the peers'
// tasks as load on the pool, so two replicas do not both send to its last
// free slot — within a publication interval, a write and a watch event
// of each other, instead of a heartbeat and an engine poll.

// publishInterval is how often a changed count is published: a burst of
// dispatches is one write.
const publishInterval = 20 * time.Millisecond

// peerTTL is how long a dead replica's counts outlive it (etcd lease,
// seconds).
const peerTTL = 5

// peers holds the other replicas' published counts.
type peers struct {
	mu      sync.Mutex
	by      map[string]map[string]int // replica → candidate key → tasks
	sum     atomic.Pointer[map[string]int]
	version atomic.Uint64
}

func (p *peers) set(replica string, counts map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if counts == nil {
		delete(p.by, replica)
	} else {
		p.by[replica] = counts
	}
	sum := make(map[string]int)
	for _, c := range p.by {
		for k, n := range c {
			sum[k] += n
		}
	}
	p.sum.Store(&sum)
	p.version.Add(1)
}

// Peers returns the tasks the other replicas have in flight, by candidate
// key, and a version that changes with them. The map is not to be
// modified.
func (s *Store) Peers() (map[string]int, uint64) {
	if m := s.peers.sum.Load(); m != nil {
		return *m, s.peers.version.Load()
	}
	return nil, s.peers.version.Load()
}

// PublishInFlight publishes inflight() — this replica's tasks in flight
// by candidate key — whenever it changed, at most every publishInterval,
// until ctx ends; then it deletes them.
func (s *Store) PublishInFlight(ctx context.Context, inflight func() map[string]int) {
	key := s.prefix + "inflight/" + s.replica
	var lease clientv3.LeaseID
	var last map[string]int
	published := false
	t := time.NewTicker(publishInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if lease != 0 {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				_, _ = s.cli.Revoke(cctx, lease) // the counts go with it
				cancel()
			}
			return
		case <-t.C:
		}
		now := inflight()
		if published && maps.Equal(now, last) {
			continue
		}
		if lease == 0 {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := s.cli.Grant(cctx, peerTTL)
			cancel()
			if err != nil {
				continue // etcd away: the writer reports it
			}
			lease = resp.ID
			ka, err := s.cli.KeepAlive(ctx, lease)
			if err != nil {
				lease = 0
				continue
			}
			go func() {
				for range ka { // drain: the client keeps the lease alive while this reads
				}
			}()
		}
		b, _ := json.Marshal(now)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.cli.Put(cctx, key, string(b), clientv3.WithLease(lease))
		cancel()
		if err != nil {
			lease = 0 // maybe expired while etcd was away: a new one next time
			continue
		}
		last, published = now, true
	}
}

// runPeers follows the other replicas' counts: a snapshot, then a watch;
// again from a snapshot when the watch ends.
func (s *Store) runPeers(ctx context.Context) {
	prefix := s.prefix + "inflight/"
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := s.cli.Get(cctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		seen := map[string]bool{}
		for _, kv := range resp.Kvs {
			replica := strings.TrimPrefix(string(kv.Key), prefix)
			seen[replica] = true
			s.applyPeer(replica, kv.Value)
		}
		s.peers.mu.Lock()
		var gone []string
		for r := range s.peers.by {
			if !seen[r] {
				gone = append(gone, r)
			}
		}
		s.peers.mu.Unlock()
		for _, r := range gone {
			s.peers.set(r, nil)
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				replica := strings.TrimPrefix(string(ev.Kv.Key), prefix)
				if ev.Type == mvccpb.DELETE {
					s.peers.set(replica, nil)
					continue
				}
				s.applyPeer(replica, ev.Kv.Value)
			}
		}
		wcancel()
	}
}

func (s *Store) applyPeer(replica string, value []byte) {
	if replica == s.replica {
		return
	}
	var counts map[string]int
	if json.Unmarshal(value, &counts) != nil {
		return
	}
	s.peers.set(replica, counts)
}
