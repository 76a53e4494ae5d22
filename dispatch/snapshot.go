package dispatch

import (
	"time"

	"github.com/llorch/llorch/api"
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

// snapshot is the placement path's copy of the fleet: rebuilt when the
// fleet changes (at most every rebuildEvery), utilisation refreshed when
// its source has new readings, and this control plane's in-flight counts
// and failures overlaid in O(pools touched). Guarded by passMu.
type snapshot struct {
	built     time.Time
	buildCost time.Duration // how long the last rebuild took
	fleetVer  uint64
	utilVer   uint64
	utilValid bool
	cands     []scheduler.Candidate
	index     map[string]int // candidate key -> position
	touched   []int          // positions carrying an overlay
}

// shared returns the snapshot's candidates with current overlays. Call
// with passMu held; the slice is valid until the next call.
func (d *Dispatcher) shared() []scheduler.Candidate {
	s := &d.snap
	now := d.now()
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
		s.rebuild(d.opts.Fleet.Candidates(), fv, now)
		d.countSlots(s.cands)
		s.buildCost = time.Since(begin)
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
	for _, i := range s.touched {
		s.cands[i].InFlight, s.cands[i].RecentFailure = 0, time.Time{}
	}
	s.touched = s.touched[:0]
	d.mu.Lock()
	for k, n := range d.inflight {
		if i, ok := s.index[k]; ok {
			s.cands[i].InFlight = n
			s.touched = append(s.touched, i)
		}
	}
	for k, t := range d.failures {
		if i, ok := s.index[k]; ok {
			s.cands[i].RecentFailure = t
			s.touched = append(s.touched, i)
		}
	}
	d.mu.Unlock()
	return s.cands
}

func (s *snapshot) rebuild(cands []scheduler.Candidate, version uint64, now time.Time) {
	s.cands, s.fleetVer, s.built, s.utilValid = cands, version, now, false
	s.touched = s.touched[:0]
	s.index = make(map[string]int, len(cands))
	for i := range cands {
		s.index[cands[i].Key()] = i
	}
}

// touch records that a placement changed a candidate's in-flight count, so
// the next overlay resets it.
func (s *snapshot) touch(c *scheduler.Candidate) {
	if i, ok := s.index[c.Key()]; ok {
		s.touched = append(s.touched, i)
	}
}

// countSlots keeps the fleet's usable slots for wait predictions.
func (d *Dispatcher) countSlots(cands []scheduler.Candidate) {
	slots := 0
	for i := range cands {
		c := &cands[i]
		if c.NodeStatus == api.StatusOnline && c.Pool.Ready && !c.Pool.Draining {
			slots += c.Pool.SlotsTotal
		}
	}
	d.slots.Store(int64(slots))
}
