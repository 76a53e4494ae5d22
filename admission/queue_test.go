package admission

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func ids(items []*Item) string {
	var s []string
	for _, it := range items {
		s = append(s, it.ID)
	}
	return strings.Join(s, ",")
}

func TestQueue(t *testing.T) {
	type push struct {
		id      string
		p       Priority
		wantErr error
		evicted string
	}
	tests := []struct {
		name   string
		cap    int
		policy Policy
		pushes []push
		order  string
	}{
		{"interactive before batch, each FIFO", 10, Reject, []push{
			{id: "b1", p: Batch}, {id: "i1"}, {id: "b2", p: Batch}, {id: "i2"},
		}, "i1,i2,b1,b2"},
		{"reject when full", 2, Reject, []push{
			{id: "b1", p: Batch}, {id: "i1"}, {id: "i2", wantErr: ErrFull}, {id: "b2", p: Batch, wantErr: ErrFull},
		}, "i1,b1"},
		{"drop-lru evicts the oldest batch", 3, DropLRU, []push{
			{id: "b1", p: Batch}, {id: "b2", p: Batch}, {id: "i1"},
			{id: "i2", evicted: "b1"}, {id: "b3", p: Batch, evicted: "b2"},
		}, "i1,i2,b3"},
		{"drop-lru with only interactive rejects", 2, DropLRU, []push{
			{id: "i1"}, {id: "i2"}, {id: "i3", wantErr: ErrFull}, {id: "b1", p: Batch, wantErr: ErrFull},
		}, "i1,i2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := New(tt.cap, tt.policy)
			for _, p := range tt.pushes {
				ev, err := q.Push(&Item{ID: p.id, Priority: p.p})
				if !errors.Is(err, p.wantErr) {
					t.Fatalf("push %s: err %v, want %v", p.id, err, p.wantErr)
				}
				got := ""
				if ev != nil {
					got = ev.ID
				}
				if got != p.evicted {
					t.Fatalf("push %s: evicted %q, want %q", p.id, got, p.evicted)
				}
			}
			if got := ids(q.Items()); got != tt.order {
				t.Fatalf("order %s, want %s", got, tt.order)
			}
		})
	}
}

func TestRemovePositionPushFront(t *testing.T) {
	q := New(3, Reject)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := q.Push(&Item{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if q.Position("c") != 2 || q.Position("zz") != -1 {
		t.Fatalf("positions: c=%d zz=%d", q.Position("c"), q.Position("zz"))
	}
	if !q.Remove("b") || q.Remove("b") {
		t.Fatal("Remove must succeed once")
	}
	q.PushFront(&Item{ID: "retry"})
	q.PushFront(&Item{ID: "retry2"}) // over capacity: a retry was admitted already
	if got := ids(q.Items()); got != "retry2,retry,a,c" {
		t.Fatalf("order %s", got)
	}
	if q.Len(Interactive) != 4 || q.Len(Batch) != 0 {
		t.Fatalf("lens %d %d", q.Len(Interactive), q.Len(Batch))
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Priority{"": Interactive, "interactive": Interactive, "batch": Batch} {
		if got, err := ParsePriority(in); err != nil || got != want {
			t.Errorf("ParsePriority(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Error("ParsePriority(urgent) succeeded")
	}
	if _, err := ParsePolicy("drop-oldest"); err == nil {
		t.Error("ParsePolicy(drop-oldest) succeeded")
	}
}

func TestConcurrentPushRemove(t *testing.T) {
	q := New(1000, DropLRU)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				id := fmt.Sprintf("%d-%d", g, i)
				if _, err := q.Push(&Item{ID: id, Priority: Priority(i % 2)}); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 && !q.Remove(id) {
					t.Errorf("remove %s", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := q.Len(Interactive) + q.Len(Batch); got != 8*(100-34) {
		t.Fatalf("len %d, want %d", got, 8*66)
	}
}
