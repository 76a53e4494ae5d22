package dispatch

import (
	"slices"
	"time"

	"github.com/llorch/llorch/scheduler"
)

// The in-flight history's resolution and length: long enough to date any
// report a heartbeat can carry (interval, plus the engine poll, plus
// slack) at the default intervals.
const (
	historyBucket = 100 * time.Millisecond
	historyLen    = 256 // 25.6 s
)

// loadHistory remembers, per 100 ms, the most tasks this control plane had
// in flight on one pool, so a busy count that an engine reported at some
// moment can be compared with what this control plane had sent it then.
// Buckets are numbered from the dispatcher's epoch.
type loadHistory struct {
	peak [historyLen]int32
	last int64 // newest bucket written; -1 before the first
	cur  int32 // in flight now
}

func newLoadHistory() loadHistory { return loadHistory{last: -1} }

// record notes that n tasks are in flight from bucket b on. Buckets since
// the last change held the previous count throughout.
func (h *loadHistory) record(b int64, n int) {
	if b < 0 {
		return
	}
	if h.last < 0 || b-h.last >= historyLen {
		for i := range h.peak {
			h.peak[i] = h.cur
		}
		h.last = b - 1
	}
	if b < h.last { // a clock step back: treat as now
		b = h.last
	}
	for x := h.last + 1; x <= b; x++ {
		h.peak[x%historyLen] = h.cur
	}
	h.last = b
	if v := int32(n); v > h.peak[b%historyLen] {
		h.peak[b%historyLen] = v
	}
	h.cur = int32(n)
}

// peakOver returns the most tasks in flight in buckets from..to; ok is
// false when the range is older than the history remembers.
func (h *loadHistory) peakOver(from, to int64) (peak int, ok bool) {
	from = max(0, from) // nothing ran before the dispatcher did
	if h.last < 0 || to < 0 {
		return 0, true
	}
	if from <= h.last-historyLen {
		return 0, false
	}
	for x := from; x <= min(to, h.last); x++ {
		peak = max(peak, int(h.peak[x%historyLen]))
	}
	if to > h.last { // buckets after the last change held the current count
		peak = max(peak, int(h.cur))
	}
	return peak, true
}

// Observation is what one completed task showed of the pool that ran it.
type Observation struct {
	// Sent, FirstByte and End are when the request left for the engine,
	// when its first byte came back, and when its answer ended.
	Sent, FirstByte, End time.Time
	// Tokens generated, and the engine's time generating them (its
	// timings; 0: unknown, the wall clock stands in).
	Tokens     int
	DecodeTime time.Duration
	// PromptTokens processed, and the engine's time on them (0: unknown).
	PromptTokens int
	PromptTime   time.Duration
}

// learnRate is the weight of a new sample once a pool has a few: an
// exponential moving average over about the last ten tasks, so a pool
// that slows down (another tenant, thermal throttling) is seen soon.
const learnRate = 0.1

// speedLearner keeps a pool's moving estimates, in seconds.
type speedLearner struct {
	samples                   int
	decodeTPS                 float64
	prefillTokens, prefillSec float64
	firstToken, service       float64
}

// ewma folds v into avg with the weight of sample n (1-based): the first
// sample sets it, later ones move it by max(1/n, learnRate).
func ewma(avg, v float64, n int) float64 {
	w := max(1/float64(n), learnRate)
	return avg + w*(v-avg)
}

// observe learns from one completed task. queued says the task waited in
// the engine (sent beyond its free slots): its first byte then measures
// the engine's queue, not its speed.
func (l *speedLearner) observe(o Observation, queued bool) {
	if o.End.Before(o.Sent) || o.Sent.IsZero() {
		return
	}
	l.samples++
	n := l.samples
	l.service = ewma(l.service, o.End.Sub(o.Sent).Seconds(), n)
	switch {
	case o.Tokens >= 2 && o.DecodeTime > 0:
		l.decodeTPS = ewma(l.decodeTPS, float64(o.Tokens)/o.DecodeTime.Seconds(), n)
	case o.Tokens >= 2 && !o.FirstByte.IsZero() && o.End.After(o.FirstByte):
		l.decodeTPS = ewma(l.decodeTPS, float64(o.Tokens-1)/o.End.Sub(o.FirstByte).Seconds(), n)
	}
	if o.PromptTokens > 0 && o.PromptTime > 0 {
		// Averaging tokens and time apart weighs long prompts more: a
		// one-token prompt (the rest cached) says little of the speed.
		l.prefillTokens = ewma(l.prefillTokens, float64(o.PromptTokens), n)
		l.prefillSec = ewma(l.prefillSec, o.PromptTime.Seconds(), n)
	}
	if !queued && !o.FirstByte.IsZero() {
		ft := o.FirstByte.Sub(o.Sent) - o.PromptTime
		l.firstToken = ewma(l.firstToken, max(0, ft.Seconds()), n)
	}
}

// speed is the learned speed; zero fields are unknown.
func (l *speedLearner) speed() scheduler.Speed {
	s := scheduler.Speed{
		DecodeTPS:  l.decodeTPS,
		FirstToken: seconds(l.firstToken),
		Service:    seconds(l.service),
		Samples:    l.samples,
	}
	if l.prefillSec > 0 {
		s.PrefillTPS = l.prefillTokens / l.prefillSec
	}
	return s
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// poolBook is this control plane's account of one pool: its tasks in
// flight (exact), their history, the load its engines reported beyond
// them, its last failure and its learned speed. Guarded by Dispatcher.mu.
type poolBook struct {
	inflight int
	history  loadHistory
	// foreign is the load the engines last reported beyond ours, counted
	// until foreignUntil; reportAt dates that report.
	foreign      int
	foreignUntil time.Time
	reportAt     time.Time
	failure      time.Time
	speed        speedLearner
	lastUsed     time.Time
}

// overlay writes the book's view of the pool onto its candidate.
func (b *poolBook) overlay(c *scheduler.Candidate, now time.Time) {
	c.InFlight = b.inflight
	c.Foreign = c.Peers // the engines' reports count the peers' tasks too: the larger, not the sum
	if now.Before(b.foreignUntil) {
		c.Foreign = max(c.Peers, b.foreign)
	}
	c.RecentFailure = b.failure
	if b.speed.samples > 0 {
		c.Speed = b.speed.speed()
	} else {
		c.Speed = scheduler.Speed{}
	}
}

// fleetSpeed is the prior for pools never measured: the median of what
// the measured ones showed, so a new pool is taken for a typical one.
func fleetSpeed(books map[string]*poolBook) scheduler.Speed {
	var decode, prefill, first []float64
	for _, b := range books {
		if b.speed.samples == 0 {
			continue
		}
		s := b.speed.speed()
		if s.DecodeTPS > 0 {
			decode = append(decode, s.DecodeTPS)
		}
		if s.PrefillTPS > 0 {
			prefill = append(prefill, s.PrefillTPS)
		}
		if s.FirstToken > 0 {
			first = append(first, s.FirstToken.Seconds())
		}
	}
	// Service is left unknown: the estimator derives it from the speeds
	// and the task, which fits a pool of unknown workload better.
	return scheduler.Speed{DecodeTPS: median(decode), PrefillTPS: median(prefill), FirstToken: seconds(median(first))}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}
