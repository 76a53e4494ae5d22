// Package admission is the control plane's bounded, prioritised queue of
// admitted tasks waiting for a pool: interactive tasks are always offered
// to placement before batch ones; when full, the "reject" policy refuses
// the newcomer and "drop-lru" evicts the oldest batch task to make room.
//
// Locking: one mutex guards both lanes; callers never hold it across
// placement.
package admission

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Priority of a task.
type Priority int

// Priorities, in the order they are served.
const (
	Interactive Priority = iota
	Batch
)

// ParsePriority reads "interactive" (the default) or "batch".
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "", "interactive":
		return Interactive, nil
	case "batch":
		return Batch, nil
	}
	return 0, fmt.Errorf("priority %q: want interactive or batch", s)
}

func (p Priority) String() string {
	if p == Batch {
		return "batch"
	}
	return "interactive"
}

// Policy decides what a full queue does.
type Policy string

// Policies of SPEC §2.
const (
	Reject  Policy = "reject"
	DropLRU Policy = "drop-lru"
)

// ParsePolicy validates a --admission-policy value.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case Reject, DropLRU:
		return p, nil
	}
	return "", fmt.Errorf("admission policy %q: want reject or drop-lru", s)
}

// ErrFull is returned by Push when the queue cannot take the item.
var ErrFull = errors.New("admission queue full")

// Item is one queued task.
type Item struct {
	ID       string
	Priority Priority
	Enqueued time.Time
	// Value is the caller's task.
	Value any
}

// Queue is safe for concurrent use.
type Queue struct {
	capacity int
	policy   Policy

	mu    sync.Mutex
	lanes [2][]*Item // by priority; each oldest first
}

// New returns a queue holding at most capacity items.
func New(capacity int, policy Policy) *Queue {
	return &Queue{capacity: capacity, policy: policy}
}

// Push queues it. When full, Reject returns ErrFull; DropLRU evicts the
// oldest batch item (returned) or, with none, returns ErrFull.
func (q *Queue) Push(it *Item) (evicted *Item, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.lanes[0])+len(q.lanes[1]) >= q.capacity {
		if q.policy != DropLRU || len(q.lanes[Batch]) == 0 {
			return nil, ErrFull
		}
		evicted = q.lanes[Batch][0]
		q.lanes[Batch] = q.lanes[Batch][1:]
	}
	q.lanes[it.Priority] = append(q.lanes[it.Priority], it)
	return evicted, nil
}

// PushFront queues it ahead of its lane (a retry keeps its place), even
// over capacity: it was admitted once already.
func (q *Queue) PushFront(it *Item) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.lanes[it.Priority] = append([]*Item{it}, q.lanes[it.Priority]...)
}

// Remove takes an item out by id; false if it was not queued.
func (q *Queue) Remove(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for p := range q.lanes {
		for i, it := range q.lanes[p] {
			if it.ID == id {
				q.lanes[p] = append(q.lanes[p][:i], q.lanes[p][i+1:]...)
				return true
			}
		}
	}
	return false
}

// Position is the item's 0-based place in service order, -1 if absent.
func (q *Queue) Position(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for p := range q.lanes {
		for _, it := range q.lanes[p] {
			if it.ID == id {
				return n
			}
			n++
		}
	}
	return -1
}

// Items returns the queued items in service order: interactive first, then
// batch, each oldest first.
func (q *Queue) Items() []*Item {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*Item, 0, len(q.lanes[0])+len(q.lanes[1]))
	out = append(out, q.lanes[Interactive]...)
	return append(out, q.lanes[Batch]...)
}

// Len returns the depth of one priority's lane.
func (q *Queue) Len(p Priority) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.lanes[p])
}

// Policy is what the queue does when full.
func (q *Queue) Policy() Policy { return q.policy }

// Capacity returns the bound.
func (q *Queue) Capacity() int { return q.capacity }
