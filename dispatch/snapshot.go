package dispatch

import (
	"time"

	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/utilization"
)

// Versioned is implemented by fleets that can tell when they changed (the
// registry), so the dispatcher rebuilds its candidates only then.
type Versioned interface {
	Version() uint64
}

// rebuildEvery bounds how often a changing fleet is rebuilt: a large fleet
// heartbeats all the time, and its heartbeats are seconds old anyway. This
// control plane's own dispatches are overlaid on every decision, so they
// are never stale.
const rebuildEvery = 100 * time.Millisecond

// booksIdle is how long the book of a pool gone from the fleet, with
// nothing in flight, is kept (its learned speed survives a short outage).
const booksIdle = 10 * time.Minute

// snapshot is the placement path's copy of the fleet: rebuilt when the
// fleet changes (at most every rebuildEvery), utilisation refreshed when
// its source has new readings, and this control plane's books overlaid on
// the pools whose books changed. Guarded by passMu.
type snapshot struct {
	built     time.Time
	buildCost time.Duration // how long the last rebuild took
	fleetVer  uint64
	utilVer   uint64
	utilValid bool
	cands     []scheduler.Candidate
	index     map[string]int // candidate key -> position
	waiting   []int          // positions with Waiting set
	foreign   []int          // positions with Foreign set, to age out
}

// shared returns the snapshot's candidates with current overlays. Call
// with passMu held; the slice is valid until the next call.
func (d *Dispatcher) shared(now time.Time) []scheduler.Candidate {
	s := &d.snap
	v, versioned := d.opts.Fleet.(Versioned)
	var fv uint64
	if versioned {
		fv = v.Version()
	}
	// A huge fleet takes a while to list: rebuild at most every 10 build
	// times, so rebuilding never takes more than a tenth of the time.
	every := max(rebuildEvery, 10*s.buildCost)
	if s.cands == nil || !versioned || (fv != s.fleetVer && now.Sub(s.built) >= every) {
		begin := time.Now()
		d.rebuild(d.opts.Fleet.Candidates(), fv, now)
		s.buildCost = time.Since(begin)
	} else {
		d.overlayDirty(now)
	}
	if d.opts.Util != nil {
		uv, uVersioned := d.opts.Util.(utilization.Versioned)
		var ver uint64
		if uVersioned {
			ver = uv.Version()
		}
		if !s.utilValid || !uVersioned || ver != s.utilVer {
			for i := range s.cands {
				c := &s.cands[i]
				c.Util = d.opts.Util.Get(c.NodeID, c.Pool.PoolID, c.Pool.DeviceMask)
			}
			s.utilVer, s.utilValid = ver, true
		}
	}
	return s.cands
}

// rebuild replaces the candidates, dates the load their engines reported
// against this control plane's own, and overlays every book. Call with
// passMu held.
func (d *Dispatcher) rebuild(cands []scheduler.Candidate, version uint64, now time.Time) {
	s := &d.snap
	index := make(map[string]int, len(cands))
	for i := range cands {
		index[cands[i].Key()] = i
	}
	// The jobs of the last pass still wait where they waited.
	waiting := s.waiting[:0]
	for _, i := range s.waiting {
		if j, ok := index[s.cands[i].Key()]; ok && cands[j].Waiting == 0 {
			cands[j].Waiting = s.cands[i].Waiting
			waiting = append(waiting, j)
		}
	}
	s.cands, s.index, s.fleetVer, s.built, s.utilValid = cands, index, version, now, false
	s.waiting, s.foreign = waiting, s.foreign[:0]
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range cands {
		c := &cands[i]
		if !c.Pool.SlotsObservedAt.IsZero() {
			d.dateReport(c)
		}
	}
	for k, b := range d.books {
		i, ok := s.index[k]
		if !ok {
			if b.inflight == 0 && now.Sub(b.lastUsed) > booksIdle {
				delete(d.books, k)
			}
			continue
		}
		b.overlay(&cands[i], now)
		if cands[i].Foreign > 0 {
			s.foreign = append(s.foreign, i)
		}
	}
	clear(d.dirty)
}

// dateReport takes a new report of c's engines into its book: the load
// they reported beyond what this control plane had in flight there at the
// moment they were polled is foreign, counted until ForeignTTL after that
// moment. Call with mu held.
func (d *Dispatcher) dateReport(c *scheduler.Candidate) {
	at := c.Pool.SlotsObservedAt
	reported := max(0, c.Pool.SlotsTotal-c.Pool.SlotsFree) + max(0, c.Pool.RequestsDeferred)
	b, ok := d.books[c.Key()]
	if !ok {
		if reported == 0 {
			return // nothing foreign, nothing of ours: no book needed
		}
		b = d.book(c.Key())
	}
	if !at.After(b.reportAt) {
		return // seen already
	}
	b.reportAt = at
	// Tasks sent just before the poll may not have reached the engine,
	// tasks ended just before it may still hold their slot there: take
	// the most this control plane had in flight around the moment.
	ours, known := b.history.peakOver(d.bucket(at)-1, d.bucket(at)+1)
	if !known {
		b.foreign = 0 // older than the history: cannot tell, and stale anyway
		return
	}
	b.foreign = max(0, reported-ours)
	b.foreignUntil = at.Add(foreignLife(b.foreign, c.Pool.SlotsTotal, b.speed, d.opts.ForeignTTL))
}

// unmeasuredService stands for the service time of a pool that never ran
// a task of this control plane's, when dating its foreign load.
const unmeasuredService = time.Second

// foreignLife is how long n foreign tasks on a pool of slots are counted:
// until they are likely done, twice the time its slots take to work
// through them at the pool's learned service time (unmeasuredService for
// a pool never measured); at most ttl. Counting finished work would idle
// the pool until the next heartbeat; missing work that goes on only queues
// a few of this control plane's tasks in the engine.
func foreignLife(n, slots int, speed speedLearner, ttl time.Duration) time.Duration {
	service := unmeasuredService
	if speed.samples > 0 && speed.service > 0 {
		service = seconds(speed.service)
	}
	rounds := (n + max(1, slots) - 1) / max(1, slots)
	return min(ttl, 2*time.Duration(rounds)*service)
}

// overlayDirty writes the books changed since the last overlay onto their
// candidates, and ages out foreign load. Call with passMu held.
func (d *Dispatcher) overlayDirty(now time.Time) {
	s := &d.snap
	d.mu.Lock()
	for k := range d.dirty {
		if i, ok := s.index[k]; ok {
			had := s.cands[i].Foreign > 0
			d.books[k].overlay(&s.cands[i], now)
			if !had && s.cands[i].Foreign > 0 {
				s.foreign = append(s.foreign, i)
			}
		}
	}
	clear(d.dirty)
	d.mu.Unlock()
	if len(s.foreign) == 0 {
		return
	}
	kept := s.foreign[:0]
	for _, i := range s.foreign {
		c := &s.cands[i]
		if c.Foreign == 0 {
			continue
		}
		d.mu.Lock()
		if b, ok := d.books[c.Key()]; ok && now.Before(b.foreignUntil) {
			kept = append(kept, i)
		} else {
			c.Foreign = c.Peers // the engines' report aged out; the peers' tasks stand
		}
		d.mu.Unlock()
	}
	s.foreign = kept
}

// clearWaiting forgets the last pass's waiting jobs.
func (s *snapshot) clearWaiting() {
	for _, i := range s.waiting {
		s.cands[i].Waiting = 0
	}
	s.waiting = s.waiting[:0]
}

// touchWaiting records that a job now waits for c.
func (s *snapshot) touchWaiting(c *scheduler.Candidate) {
	if i, ok := s.index[c.Key()]; ok {
		s.waiting = append(s.waiting, i)
	}
}
