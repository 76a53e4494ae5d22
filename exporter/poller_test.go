package exporter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/clocktest"
)

// stuckSource answers reads at once; with hang set, reads after the first
// block, ignoring their context as a hung driver call does, until release
// is closed.
type stuckSource struct {
	hang    bool
	release chan struct{}
	entered chan struct{} // receives each blocked read

	mu    sync.Mutex
	calls int
	err   error // returned by every read once set
}

func newStuckSource(hang bool) *stuckSource {
	return &stuckSource{hang: hang, release: make(chan struct{}), entered: make(chan struct{}, 16)}
}

func (s *stuckSource) Name() string { return "stuck" }

func (s *stuckSource) Read(context.Context) ([]GPU, error) {
	s.mu.Lock()
	s.calls++
	n, err := s.calls, s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if s.hang && n > 1 {
		s.entered <- struct{}{}
		<-s.release
	}
	g := NewGPU(0)
	g.UUID, g.Name = "GPU-stuck", "NVIDIA H200"
	g.MemoryTotalBytes, g.MemoryUsedBytes, g.MemoryReservedBytes, g.MemoryFreeBytes = 100, 10, 1, 89
	return []GPU{g}, nil
}

func (s *stuckSource) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *stuckSource) SetErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// gpuRegistry registers an exporter of the poller's GPU collector.
func gpuRegistry(p *Poller, source string) *prometheus.Registry {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(New(map[string]Collector{"gpu": NewGPUCollector(p, source)}, slog.New(slog.DiscardHandler)))
	return reg
}

// checkGPUState compares source_up and the collector's success, and counts
// the memory series.
func checkGPUState(t *testing.T, reg prometheus.Gatherer, source, up, success string, memorySeries int) {
	t.Helper()
	want := `
# HELP llorch_gpu_source_up 1 if the GPU source answered and its data is fresh.
# TYPE llorch_gpu_source_up gauge
llorch_gpu_source_up{source="` + source + `"} ` + up + `
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="gpu"} ` + success + `
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "llorch_gpu_source_up", "llorch_scrape_collector_success"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "llorch_gpu_memory_total_bytes", "llorch_gpu_memory_used_bytes",
		"llorch_gpu_memory_reserved_bytes", "llorch_gpu_memory_free_bytes")
	if err != nil || n != memorySeries {
		t.Fatalf("%d llorch_gpu_memory_* series (%v), want %d", n, err, memorySeries)
	}
}

func TestPollerHungReadNeverBlocksTheScrape(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	src := newStuckSource(true)
	const interval, maxAge = 20 * time.Millisecond, 10 * time.Second
	p := NewPoller(src, interval, maxAge)
	clock := clocktest.New(time.Time{})
	p.now = clock.Now
	reg := gpuRegistry(p, src.Name())
	ctx := context.Background()

	p.poll(ctx)
	checkGPUState(t, reg, "stuck", "1", "1", 4)

	// The second read hangs; poll gives up waiting after one interval and
	// leaves it in flight.
	begin := time.Now()
	p.poll(ctx)
	<-src.entered
	if took := time.Since(begin); took > time.Second {
		t.Fatalf("poll waited %v for a hung read", took)
	}
	// Another tick does not start a second read beside the stuck one.
	p.poll(ctx)
	if n := src.Calls(); n != 2 {
		t.Fatalf("%d reads, want 2: a read started while one hangs", n)
	}

	// Scrapes return at once and serve the last snapshot while it is fresh.
	clock.Advance(maxAge / 2)
	begin = time.Now()
	checkGPUState(t, reg, "stuck", "1", "1", 4)
	if took := time.Since(begin); took > 250*time.Millisecond {
		t.Fatalf("scrape took %v while the GPU read hangs", took)
	}

	// Past maxAge the snapshot is stale: source down, no readings, its age
	// still exported.
	clock.Advance(maxAge)
	begin = time.Now()
	checkGPUState(t, reg, "stuck", "0", "1", 0)
	if took := time.Since(begin); took > 250*time.Millisecond {
		t.Fatalf("scrape took %v while the GPU read hangs", took)
	}
	const age = `
# HELP llorch_gpu_source_data_age_seconds Age of the GPU readings being exported.
# TYPE llorch_gpu_source_data_age_seconds gauge
llorch_gpu_source_data_age_seconds{source="stuck"} 15
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(age), "llorch_gpu_source_data_age_seconds"); err != nil {
		t.Fatal(err)
	}
	if _, fresh := p.Current(); fresh {
		t.Fatal("Current reports a stale snapshot fresh")
	}

	// The driver comes back: the stuck read ends and the next poll reads
	// again.
	close(src.release)
	clocktest.WaitFor(t, 5*time.Second, "a new read after the stuck one returned", func() bool {
		if src.Calls() >= 3 {
			return true
		}
		p.poll(ctx)
		return false
	})
	checkGPUState(t, reg, "stuck", "1", "1", 4)
}

func TestPollerRunStopsWhileReadHangs(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	src := newStuckSource(true)
	p := NewPoller(src, 10*time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	p.WaitFirst(wctx)
	wcancel()
	if _, fresh := p.Current(); !fresh {
		t.Fatal("first poll did not give a fresh snapshot")
	}
	<-src.entered // a later tick's read hangs
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel while a read hangs")
	}
	close(src.release) // let the hung read finish before the leak check
	clocktest.WaitFor(t, 5*time.Second, "the hung read to finish", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.inFlight
	})
}

func TestPollerFailingSource(t *testing.T) {
	src := newStuckSource(false)
	src.SetErr(errors.New("nvml: GPU is lost"))
	p := NewPoller(src, time.Second, time.Minute)
	clock := clocktest.New(time.Time{})
	p.now = clock.Now
	reg := gpuRegistry(p, "nvml")

	// Before any reading: down, failed.
	p.poll(context.Background())
	checkGPUState(t, reg, "nvml", "0", "0", 0)
	if snap, _ := p.Current(); snap.Err == nil || !snap.At.IsZero() {
		t.Fatalf("snapshot = %+v", snap)
	}

	// Recovers, then fails again: the old readings are not exported.
	src.SetErr(nil)
	p.poll(context.Background())
	checkGPUState(t, reg, "nvml", "1", "1", 4)
	src.SetErr(errors.New("nvml: GPU is lost"))
	clock.Advance(time.Second)
	p.poll(context.Background())
	checkGPUState(t, reg, "nvml", "0", "0", 0)
}

func TestFirstPollPendingIsNoData(t *testing.T) {
	src := newStuckSource(false)
	reg := gpuRegistry(NewPoller(src, time.Second, time.Minute), src.Name())
	checkGPUState(t, reg, "stuck", "0", "1", 0)
}

func TestNoGPUSource(t *testing.T) {
	reg := gpuRegistry(nil, "none")
	checkGPUState(t, reg, "none", "0", "1", 0)
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 3 {
		t.Fatalf("%d series (%v), want source_up and the collector's duration and success", n, err)
	}
}
