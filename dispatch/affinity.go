package dispatch

import (
	"container/list"
	"time"
)

// Defaults of the session-affinity memory: a session's KV cache lives in
// its engine's slot only until other tasks take the slot, so an hour-old
// affinity is worth nothing, and a bound keeps a flood of distinct
// sessions (every OpenAI `user`) from growing the control plane.
const (
	DefaultAffinityTTL  = time.Hour
	DefaultAffinitySize = 100_000
)

// affinities remembers which pool served each session last, for at most
// ttl and at most size sessions, the least recently used going first. Not
// safe for concurrent use: the dispatcher holds its mu.
type affinities struct {
	ttl  time.Duration
	size int
	byID map[string]*list.Element
	lru  list.List // of *affinity, most recent first
}

type affinity struct {
	session, pool string
	at            time.Time
}

func newAffinities(ttl time.Duration, size int) *affinities {
	return &affinities{ttl: ttl, size: max(1, size), byID: map[string]*list.Element{}}
}

// get returns the session's pool ("" if none, or expired).
func (a *affinities) get(session string, now time.Time) string {
	e, ok := a.byID[session]
	if !ok {
		return ""
	}
	if af := e.Value.(*affinity); now.Sub(af.at) <= a.ttl {
		return af.pool
	}
	a.lru.Remove(e)
	delete(a.byID, session)
	return ""
}

// set records that pool served session at now, evicting the least recently
// used sessions beyond the size and any expired at the back.
func (a *affinities) set(session, pool string, now time.Time) {
	if e, ok := a.byID[session]; ok {
		af := e.Value.(*affinity)
		af.pool, af.at = pool, now
		a.lru.MoveToFront(e)
	} else {
		a.byID[session] = a.lru.PushFront(&affinity{session: session, pool: pool, at: now})
	}
	for a.lru.Len() > 0 {
		back := a.lru.Back()
		af := back.Value.(*affinity)
		if a.lru.Len() <= a.size && now.Sub(af.at) <= a.ttl {
			break
		}
		a.lru.Remove(back)
		delete(a.byID, af.session)
	}
}

func (a *affinities) len() int { return a.lru.Len() }
