package loadtest

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/backoff"
)

// scheduler runs every virtual agent's heartbeat timer: one heap of next
// beats, read by one goroutine that hands due nodes to a pool of workers.
// A node is in the heap at most once, or held by a worker; each entry
// carries the node's sequence number, so rescheduling a node (a wake)
// makes its older entry stale. 100,000 timers cost a heap, not 100,000
// goroutines.
type scheduler struct {
	f       *fleet
	timeout time.Duration // per call, as the agent's RequestTimeout
	retry   backoff.Backoff

	mu   sync.Mutex
	h    beatHeap
	kick chan struct{}
	work chan *vnode
	rng  *rand.Rand // under mu
}

type beat struct {
	at  time.Time
	n   *vnode
	seq uint64
}

type beatHeap []beat

func (h beatHeap) Len() int           { return len(h) }
func (h beatHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h beatHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *beatHeap) Push(x any)        { *h = append(*h, x.(beat)) }
func (h *beatHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	*h = old[:len(old)-1]
	return b
}

// requestTimeout bounds each registration and heartbeat, as the agent's.
const requestTimeout = 5 * time.Second

// newScheduler builds the fleet's heartbeat clients: conns keep-alive
// transports shared round robin, each holding one idle connection, so up
// to conns connections stay open to the control plane as a real fleet's
// one per agent.
func newScheduler(f *fleet, conns int, token, cpURL string) *scheduler {
	s := &scheduler{f: f, timeout: requestTimeout, kick: make(chan struct{}, 1),
		work:  make(chan *vnode, 4096),
		retry: backoff.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second},
		rng:   rand.New(rand.NewPCG(f.cfg.Seed, 0x6ea7)),
	}
	transports := make([]*http.Client, max(conns, 1))
	for i := range transports {
		transports[i] = &http.Client{Transport: &http.Transport{
			Proxy: nil, DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second, DisableCompression: true,
		}}
	}
	for _, n := range f.nodes {
		n.client = &api.Client{BaseURL: cpURL, Token: token, HTTP: transports[n.idx%len(transports)]}
	}
	f.sched = s
	return s
}

// run starts the workers and the timer loop; every node's first
// registration falls uniformly within ramp.
func (s *scheduler) run(ctx context.Context, workers int, ramp time.Duration) {
	now := time.Now()
	s.mu.Lock()
	for _, n := range s.f.nodes {
		at := now
		if ramp > 0 {
			at = now.Add(time.Duration(s.rng.Int64N(int64(ramp))))
		}
		n.mu.Lock()
		n.seq++
		heap.Push(&s.h, beat{at: at, n: n, seq: n.seq})
		n.mu.Unlock()
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case n := <-s.work:
					s.finish(n, n.step(ctx, s))
				}
			}
		})
	}
	s.loop(ctx)
	wg.Wait()
}

func (s *scheduler) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var due *vnode
		wait := time.Hour
		for s.h.Len() > 0 {
			top := s.h[0]
			top.n.mu.Lock()
			stale := top.seq != top.n.seq
			if !stale && !top.at.After(time.Now()) {
				top.n.busy = true
			}
			top.n.mu.Unlock()
			if stale {
				heap.Pop(&s.h)
				continue
			}
			if d := time.Until(top.at); d > 0 {
				wait = d
				break
			}
			heap.Pop(&s.h)
			due = top.n
			break
		}
		s.mu.Unlock()
		if due != nil {
			select {
			case s.work <- due:
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
	}
}

// push schedules n at at; the caller holds n.mu.
func (s *scheduler) pushLocked(n *vnode, at time.Time) {
	n.seq++
	seq := n.seq
	s.mu.Lock()
	heap.Push(&s.h, beat{at: at, n: n, seq: seq})
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// finish reschedules a node its worker is done with: next from now, at
// once if woken meanwhile, never when next < 0 (parked: killed or frozen
// until a wake).
func (s *scheduler) finish(n *vnode, next time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.busy = false
	switch {
	case n.wake:
		n.wake = false
		s.pushLocked(n, time.Now())
	case next >= 0:
		s.pushLocked(n, time.Now().Add(next))
	default:
		n.seq++ // parked: no entry
	}
}

// wakeNow makes n beat at once (a thawed or revived node).
func (s *scheduler) wakeNow(n *vnode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.busy {
		n.wake = true
		return
	}
	s.pushLocked(n, time.Now())
}

// reregister makes n register again at once, as an agent does after a
// 404 or when it starts.
func (s *scheduler) reregister(n *vnode) {
	n.mu.Lock()
	n.forceRegister = true
	n.mu.Unlock()
	s.wakeNow(n)
}

// jitter spreads an interval by ± the configured fraction.
func (s *scheduler) jitter(d time.Duration) time.Duration {
	j := s.f.cfg.HeartbeatJitter
	if j <= 0 {
		return d
	}
	s.mu.Lock()
	r := s.rng.Float64()
	s.mu.Unlock()
	return time.Duration(float64(d) * (1 + j*(2*r-1)))
}

// step is one turn of the node's agent loop, as agent.Agent.Run: register
// when not registered, then heartbeat. It returns the wait before the
// next turn, or -1 to park (killed, frozen).
func (n *vnode) step(ctx context.Context, s *scheduler) time.Duration {
	n.mu.Lock()
	mode := n.mode
	if n.forceRegister {
		n.forceRegister, n.registered = false, false
	}
	n.mu.Unlock()
	if mode != nodeUp {
		return -1
	}
	f := s.f
	if !n.registered {
		sent := time.Now()
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := n.client.Register(cctx, n.registration())
		cancel()
		n.record(attempt{sent: sent.UnixNano(), done: time.Now().UnixNano(), register: true, ok: err == nil})
		f.regSent.Add(1)
		if err != nil {
			f.regFailed.Add(1)
			d := s.retry.Delay(n.failures)
			if errors.Is(err, api.ErrUnauthorized) {
				d = s.retry.Max
			}
			n.failures++
			return d
		}
		n.failures, n.registered = 0, true
	}
	hb := n.heartbeatBody()
	sent := time.Now()
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	resp, err := n.client.Heartbeat(cctx, n.id, hb)
	cancel()
	n.record(attempt{sent: sent.UnixNano(), done: time.Now().UnixNano(), ok: err == nil, draining: hb.Draining})
	f.hbSent.Add(1)
	switch {
	case errors.Is(err, api.ErrNotFound):
		f.hbFailed.Add(1)
		n.registered = false
		return 0
	case errors.Is(err, api.ErrUnauthorized):
		f.hbFailed.Add(1)
		n.registered = false
		return s.retry.Max
	case err != nil:
		f.hbFailed.Add(1)
	case resp.NextHeartbeatMS > 0:
		if next := time.Duration(resp.NextHeartbeatMS) * time.Millisecond; next < n.interval {
			n.interval = next
		}
	}
	return s.jitter(n.interval)
}
