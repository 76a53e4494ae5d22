package dispatch

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
)

// Event is one task event: an SSE "event:" name and its JSON "data:".
type Event struct {
	Type string
	Data json.RawMessage
}

// Task is one v2 task's event log. Every event is kept from admission, so
// a client that subscribes late sees them all; after the last event
// (end or error) nothing more is appended.
type Task struct {
	ID        string
	SessionID string
	ctx       context.Context
	cancel    context.CancelFunc

	mu       sync.Mutex
	events   []Event
	finished time.Time
	changed  chan struct{} // closed and replaced on every append
	watchers int
}

// NewTask returns a task whose context ends on Cancel. parent carries the
// submitting request's trace, so engine calls join it; its cancellation is
// not inherited (the task outlives the request).
func NewTask(parent context.Context, id, session string) *Task {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &Task{ID: id, SessionID: session, ctx: ctx, cancel: cancel, changed: make(chan struct{})}
}

// Context ends when the task is cancelled.
func (t *Task) Context() context.Context { return t.ctx }

// Cancel stops the task: queued, it leaves the queue; running, its engine
// request is closed, which frees the slot.
func (t *Task) Cancel() { t.cancel() }

// append adds an event unless the task has finished; terminal marks the
// last event. It reports whether the event was added.
func (t *Task) append(typ string, v any, terminal bool) bool {
	data, err := json.Marshal(v)
	if err != nil {
		data = []byte(`{}`)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.finished.IsZero() {
		return false
	}
	t.events = append(t.events, Event{Type: typ, Data: data})
	if terminal {
		t.finished = time.Now()
		t.cancel() // release the context's resources
	}
	close(t.changed)
	t.changed = make(chan struct{})
	return true
}

// Emit appends a non-terminal event (started, token, metrics).
func (t *Task) Emit(typ string, v any) bool { return t.append(typ, v, false) }

// End appends the final "end" event.
func (t *Task) End(v any) bool { return t.append("end", v, true) }

// Fail appends the final "error" event.
func (t *Task) Fail(e *api.Error) bool { return t.append("error", e, true) }

// Events returns the events from index from on, a channel closed at the
// next append, and whether the task has finished.
func (t *Task) Events(from int) ([]Event, <-chan struct{}, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var evs []Event
	if from < len(t.events) {
		evs = append(evs, t.events[from:]...)
	}
	return evs, t.changed, !t.finished.IsZero()
}

// Finished reports whether the task ended, and when.
func (t *Task) Finished() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished, !t.finished.IsZero()
}

// Watch counts an event-stream subscriber; the returned func ends the
// subscription and reports whether it was the last one.
func (t *Task) Watch() (unwatch func() (last bool)) {
	t.mu.Lock()
	t.watchers++
	t.mu.Unlock()
	var once sync.Once
	return func() bool {
		last := false
		once.Do(func() {
			t.mu.Lock()
			t.watchers--
			last = t.watchers == 0
			t.mu.Unlock()
		})
		return last
	}
}

// Store holds tasks by id; finished tasks stay readable for Retention.
type Store struct {
	Retention time.Duration

	mu    sync.RWMutex
	tasks map[string]*Task
}

// NewStore keeps finished tasks for retention.
func NewStore(retention time.Duration) *Store {
	return &Store{Retention: retention, tasks: map[string]*Task{}}
}

// Add stores t; false if the id is taken.
func (s *Store) Add(t *Task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tasks[t.ID]; ok {
		return false
	}
	s.tasks[t.ID] = t
	return true
}

// Get finds a task.
func (s *Store) Get(id string) (*Task, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tasks[id]
	return t, ok
}

// Sweep forgets tasks finished longer than Retention ago.
func (s *Store) Sweep(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, t := range s.tasks {
		if at, done := t.Finished(); done && now.Sub(at) > s.Retention {
			delete(s.tasks, id)
			n++
		}
	}
	return n
}

// FailUnfinished ends every task that has not ended with e, its final
// event, which also ends its event streams. A control plane that shuts
// down calls it last, once its runner has ended what it could, so that no
// stream is left waiting for an event that will not come. It returns how
// many tasks it ended.
func (s *Store) FailUnfinished(e *api.Error) int {
	s.mu.RLock()
	tasks := make([]*Task, 0, len(s.tasks))
	for _, t := range s.tasks {
		tasks = append(tasks, t)
	}
	s.mu.RUnlock()
	n := 0
	for _, t := range tasks {
		c := *e
		if t.Fail(&c) {
			n++
		}
	}
	return n
}

// Run sweeps every minute until ctx is done.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Sweep(now)
		}
	}
}
