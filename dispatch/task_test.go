package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

func types(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestTaskKeepsEventsForLateSubscribers(t *testing.T) {
	task := NewTask(context.Background(), "t1", "s1")
	if !task.Emit("started", map[string]any{"pool_id": "pool-0"}) {
		t.Fatal("Emit on a running task = false")
	}
	task.Emit("token", tokenEvent{T: " hi", I: 0})
	task.Emit("token", tokenEvent{T: " there", I: 1})
	if !task.End(endEvent{TokensOut: 2}) {
		t.Fatal("End = false")
	}

	evs, _, done := task.Events(0)
	if !done {
		t.Error("finished task reports not done")
	}
	if got, want := types(evs), []string{"started", "token", "token", "end"}; !slices.Equal(got, want) {
		t.Fatalf("late subscriber got %v, want %v", got, want)
	}
	var tok tokenEvent
	if err := json.Unmarshal(evs[2].Data, &tok); err != nil || tok.T != " there" || tok.I != 1 {
		t.Errorf("token data %s", evs[2].Data)
	}
	if evs, _, _ := task.Events(3); len(evs) != 1 || evs[0].Type != "end" {
		t.Errorf("Events(3) = %v", types(evs))
	}
	if evs, _, _ := task.Events(10); len(evs) != 0 {
		t.Errorf("Events past the end = %v", types(evs))
	}

	// Terminal: nothing follows.
	if task.Emit("token", tokenEvent{}) || task.End(endEvent{}) || task.Fail(&api.Error{Code: api.CodeInternal}) {
		t.Error("an event was appended after end")
	}
	if evs, _, _ := task.Events(0); len(evs) != 4 {
		t.Errorf("%d events after terminal appends", len(evs))
	}
	if at, ok := task.Finished(); !ok || at.IsZero() {
		t.Error("Finished() = false")
	}
	if task.Context().Err() == nil {
		t.Error("the task's context lives on after its end")
	}
}

func TestTaskFailIsTerminal(t *testing.T) {
	task := NewTask(context.Background(), "t", "")
	if !task.Fail(&api.Error{Code: api.CodeWorkerReset, Message: "lost", Retriable: true}) {
		t.Fatal("Fail = false")
	}
	if task.Emit("token", tokenEvent{}) || task.End(endEvent{}) {
		t.Error("event after error")
	}
	evs, _, done := task.Events(0)
	if !done || len(evs) != 1 || evs[0].Type != "error" {
		t.Fatalf("events %v done=%v", types(evs), done)
	}
	var e api.Error
	if err := json.Unmarshal(evs[0].Data, &e); err != nil || e.Code != api.CodeWorkerReset || !e.Retriable {
		t.Errorf("error data %s", evs[0].Data)
	}
}

func TestTaskChangedChannel(t *testing.T) {
	task := NewTask(context.Background(), "t", "")
	evs, changed, done := task.Events(0)
	if len(evs) != 0 || done || closed(changed) {
		t.Fatalf("new task: %d events, done=%v, changed closed=%v", len(evs), done, closed(changed))
	}
	task.Emit("started", struct{}{})
	if !closed(changed) {
		t.Fatal("changed not closed by an append")
	}
	_, next, _ := task.Events(1)
	if closed(next) {
		t.Fatal("the new changed channel is already closed")
	}
	task.End(endEvent{})
	if !closed(next) {
		t.Error("changed not closed by the end")
	}
	_, after, done := task.Events(2)
	if !done {
		t.Error("not done after end")
	}
	task.Emit("token", tokenEvent{})
	if closed(after) {
		t.Error("a refused append closed changed")
	}
}

func TestTaskWaitersSeeEveryEvent(t *testing.T) {
	task := NewTask(context.Background(), "t", "")
	got := make(chan []string)
	go func() {
		var seen []string
		next := 0
		for {
			evs, changed, done := task.Events(next)
			next += len(evs)
			seen = append(seen, types(evs)...)
			if done {
				got <- seen
				return
			}
			<-changed
		}
	}()
	task.Emit("started", struct{}{})
	for i := range 50 {
		task.Emit("token", tokenEvent{I: i})
	}
	task.End(endEvent{TokensOut: 50})
	select {
	case seen := <-got:
		if len(seen) != 52 || seen[0] != "started" || seen[51] != "end" {
			t.Errorf("subscriber saw %d events: first %q last %q", len(seen), seen[0], seen[len(seen)-1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber never saw the end")
	}
}

func TestTaskContext(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	task := NewTask(parent, "t", "")
	cancelParent()
	if task.Context().Err() != nil {
		t.Fatal("the task inherited its request's cancellation")
	}
	task.Cancel()
	if task.Context().Err() == nil {
		t.Error("Cancel did not end the context")
	}
	if _, done := task.Finished(); done {
		t.Error("Cancel alone finished the task: the runner reports the end")
	}
}

func TestTaskWatchers(t *testing.T) {
	task := NewTask(context.Background(), "t", "")
	w1 := task.Watch()
	w2 := task.Watch()
	if w1() {
		t.Error("first of two unwatches reported last")
	}
	if w1() {
		t.Error("a repeated unwatch counted twice")
	}
	if !w2() {
		t.Error("last unwatch not reported last")
	}
	w3 := task.Watch()
	if !w3() {
		t.Error("a lone watcher's unwatch not reported last")
	}
}

func TestStoreSweep(t *testing.T) {
	s := NewStore(5 * time.Minute)
	done := NewTask(context.Background(), "done", "")
	running := NewTask(context.Background(), "running", "")
	t.Cleanup(running.Cancel)
	if !s.Add(done) || !s.Add(running) {
		t.Fatal("Add = false")
	}
	if s.Add(NewTask(context.Background(), "done", "")) {
		t.Error("a duplicate id was added")
	}
	done.End(endEvent{})
	at, _ := done.Finished()

	if n := s.Sweep(at.Add(4 * time.Minute)); n != 0 {
		t.Errorf("swept %d within retention", n)
	}
	if _, ok := s.Get("done"); !ok {
		t.Error("a finished task vanished within retention")
	}
	if n := s.Sweep(at.Add(5*time.Minute + time.Second)); n != 1 {
		t.Errorf("swept %d after retention, want 1", n)
	}
	if _, ok := s.Get("done"); ok {
		t.Error("a finished task outlived retention")
	}
	if _, ok := s.Get("running"); !ok {
		t.Error("a running task was swept")
	}
	if n := s.Sweep(at.Add(time.Hour)); n != 0 {
		t.Errorf("swept %d running tasks", n)
	}
}

func TestStoreRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		NewStore(time.Minute).Run(ctx)
		close(stopped)
	}()
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Store.Run did not stop")
	}
}

func TestTailKeepsTheAnswersEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   string // the end of tail's bytes
		done   bool
	}{
		{"marker split across reads", []string{"data: {\"x\":1}\n\ndata: [DO", "NE]\n\n"}, "data: [DONE]\n\n", true},
		{"one read longer than the tail", []string{strings.Repeat("x", 3*tailSize) + "data: [DONE]"}, "x" + doneText, true},
		{"marker pushed out by a long read", []string{"data: [DONE]", strings.Repeat("y", tailSize)}, "yyy", false},
		{"many small reads wrap the buffer", slices.Repeat([]string{"data: {\"t\":\"tok\"}\n\n"}, 500), "{\"t\":\"tok\"}\n\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var end tail
			for _, c := range tc.chunks {
				end.add([]byte(c))
			}
			got := end.bytes()
			if len(got) > 2*tailSize || !bytes.HasSuffix(got, []byte(tc.want)) {
				t.Fatalf("tail (%d bytes) ends %q, want %q", len(got), got[max(0, len(got)-40):], tc.want)
			}
			if len(got) < min(tailSize, len(strings.Join(tc.chunks, ""))) {
				t.Errorf("tail kept %d bytes, want at least %d", len(got), tailSize)
			}
			if bytes.Contains(got, doneMarker) != tc.done {
				t.Errorf("marker seen = %v, want %v", !tc.done, tc.done)
			}
		})
	}
}
