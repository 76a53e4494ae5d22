package clocktest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/clocktest"
)

func TestClock(t *testing.T) {
	c := clocktest.New(time.Time{})
	if got := c.Now(); !got.Equal(clocktest.Epoch) {
		t.Fatalf("new clock reads %v, want %v", got, clocktest.Epoch)
	}
	if got := c.Advance(90 * time.Second); !got.Equal(clocktest.Epoch.Add(90*time.Second)) || !c.Now().Equal(got) {
		t.Fatalf("Advance returned %v, Now %v", got, c.Now())
	}
	back := clocktest.Epoch.Add(-time.Hour)
	c.Set(back)
	if !c.Now().Equal(back) {
		t.Fatalf("after Set, Now = %v, want %v", c.Now(), back)
	}
	if now := clocktest.New(back).Now(); !now.Equal(back) {
		t.Fatalf("New(%v) reads %v", back, now)
	}
}

// TestClockConcurrent is for the race detector: readers and writers at once.
func TestClockConcurrent(t *testing.T) {
	c := clocktest.New(time.Time{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got := c.Now().Sub(clocktest.Epoch); got != 400*time.Millisecond {
		t.Fatalf("400 advances of 1ms moved the clock %v", got)
	}
}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	if d := clocktest.WaitFor(t, 5*time.Second, "three", func() bool { return n.Load() == 3 }); d < 0 || d > 5*time.Second {
		t.Fatalf("WaitFor took %v", d)
	}
	if d := clocktest.WaitFor(t, 0, "true", func() bool { return true }); d > time.Second {
		t.Fatalf("a condition already true took %v", d)
	}
}

// fatalTB records the failure instead of failing the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitForTimesOut(t *testing.T) {
	tb := &fatalTB{TB: t}
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		clocktest.WaitFor(tb, 30*time.Millisecond, "the impossible", func() bool { calls++; return false })
		tb.msg = "WaitFor returned"
	}()
	<-done
	if !strings.Contains(tb.msg, "waiting for the impossible") || !strings.Contains(tb.msg, "30ms") {
		t.Fatalf("failure %q, want it to name what it waited for and for how long", tb.msg)
	}
	if calls < 2 {
		t.Errorf("cond called %d times in 30ms", calls)
	}
}
