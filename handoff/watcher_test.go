package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/clocktest"
)

// TestMain checks that no test leaves a goroutine behind: every watcher,
// with its fsnotify reader, must stop once its context is canceled.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sinkEvent is one call a recordingSink received.
type sinkEvent struct {
	op   string // "upsert" or "remove"
	path string
	h    Handoff
}

// recordingSink records every call and keeps the state they imply.
type recordingSink struct {
	mu     sync.Mutex
	events []sinkEvent
	state  map[string]Handoff
}

func newRecordingSink() *recordingSink { return &recordingSink{state: make(map[string]Handoff)} }

func (s *recordingSink) Upsert(path string, h Handoff) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, sinkEvent{"upsert", path, h})
	s.state[path] = h
}

func (s *recordingSink) Remove(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, sinkEvent{op: "remove", path: path})
	delete(s.state, path)
}

// count reports how many op calls path got.
func (s *recordingSink) count(op, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.events {
		if e.op == op && e.path == path {
			n++
		}
	}
	return n
}

// holds reports whether the sink's state for path is h.
func (s *recordingSink) holds(path string, h Handoff) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.state[path]
	return ok && reflect.DeepEqual(got, h)
}

func (s *recordingSink) has(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.state[path]
	return ok
}

func (s *recordingSink) snapshot() map[string]Handoff {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Handoff, len(s.state))
	for k, v := range s.state {
		out[k] = v
	}
	return out
}

// handoffFor returns a valid handoff for pool with the given slot count.
func handoffFor(pool string, slots int) Handoff {
	return Handoff{
		PoolID: pool, ReplicaID: "r0", Engine: "llamacpp", EngineVersion: "b4747",
		URL: "http://127.0.0.1:8081", SlotsTotal: slots, SlotsFree: slots,
		Model: Model{ID: "stories260K"}, PID: 1000,
	}
}

// writeAtomic writes data as a writer should: a hidden temp file in dir,
// renamed into place. touch, when non-nil, runs on the temp file before the
// rename.
func writeAtomic(t *testing.T, dir, name string, data []byte, touch func(tmp string)) string {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if touch != nil {
		touch(tmp)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	return final
}

func writeHandoff(t *testing.T, dir, name string, h Handoff) string {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return writeAtomic(t, dir, name, b, nil)
}

// running is a Watcher under test.
type running struct {
	dir   string
	sink  *recordingSink
	w     *Watcher
	reg   *prometheus.Registry
	ready string // a handoff file present at start; its Upsert means the first scan ran
}

// startWatcher runs a Watcher on a fresh directory that setup may fill first,
// and returns once the first scan has run. The watcher stops at cleanup.
func startWatcher(t *testing.T, mode Mode, setup func(dir string)) *running {
	t.Helper()
	r := &running{dir: t.TempDir(), sink: newRecordingSink(), reg: prometheus.NewRegistry()}
	if setup != nil {
		setup(r.dir)
	}
	r.ready = writeHandoff(t, r.dir, "ready.json", handoffFor("ready", 1))
	w, err := NewWatcher(WatcherOptions{
		Dir: r.dir, Mode: mode, PollInterval: 20 * time.Millisecond,
		Sink: r.sink, Logger: slog.New(slog.DiscardHandler), Registerer: r.reg,
	})
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	r.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Registered after t.TempDir, so it runs first: the watcher stops
	// before its directory goes.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
	})
	// Until the first scan has run, a file written now could be loaded by
	// both that scan and an fsnotify event; the tests count exactly.
	clocktest.WaitFor(t, 5*time.Second, "the first scan", func() bool { return r.sink.has(r.ready) })
	return r
}

func (r *running) processed(outcome string) float64 {
	return testutil.ToFloat64(r.w.processed.WithLabelValues(outcome))
}

// waitProcessed waits until the outcome's counter reaches n.
func (r *running) waitProcessed(t *testing.T, outcome string, n float64) {
	t.Helper()
	clocktest.WaitFor(t, 5*time.Second, fmt.Sprintf("%s count %v", outcome, n), func() bool { return r.processed(outcome) >= n })
}

// marker writes a valid handoff file that sorts after every other name and
// waits for the sink to get it. The watcher handles files in order (events
// in sequence; polling in name order), so every change made before marker
// has been handled when it returns: the basis of "nothing happened" checks.
func (r *running) marker(t *testing.T, name string) {
	t.Helper()
	if !strings.HasPrefix(name, "zz") {
		t.Fatalf("marker %q must sort last", name)
	}
	path := writeHandoff(t, r.dir, name, handoffFor(strings.TrimSuffix(name, ".json"), 1))
	clocktest.WaitFor(t, 5*time.Second, "marker "+name, func() bool { return r.sink.has(path) })
}

func TestWatcher(t *testing.T) {
	for _, mode := range []Mode{ModeFsnotify, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			t.Run("files present at start are loaded", func(t *testing.T) { testPreexisting(t, mode) })
			t.Run("create by rename", func(t *testing.T) { testCreate(t, mode) })
			t.Run("replace by rename", func(t *testing.T) { testReplace(t, mode) })
			t.Run("replace with same size and mtime", func(t *testing.T) { testReplaceSameStamp(t, mode) })
			t.Run("delete", func(t *testing.T) { testDelete(t, mode) })
			t.Run("invalid files are counted and skipped", func(t *testing.T) { testInvalid(t, mode) })
			t.Run("garbage over a valid file keeps the replica", func(t *testing.T) { testGarbageKeepsReplica(t, mode) })
			t.Run("other names are ignored", func(t *testing.T) { testIgnoredNames(t, mode) })
			t.Run("symlinked file is loaded once", func(t *testing.T) { testSymlink(t, mode) })
		})
	}
}

func testPreexisting(t *testing.T, mode Mode) {
	a, b := handoffFor("pool-0", 4), handoffFor("pool-1", 2)
	r := startWatcher(t, mode, func(dir string) {
		writeHandoff(t, dir, "pool-0_r0.json", a)
		writeHandoff(t, dir, "pool-1_r0.json", b)
		writeAtomic(t, dir, "broken.json", []byte(`{"pool_id":`), nil)
		writeAtomic(t, dir, "notes.txt", []byte(`{}`), nil)
	})
	want := map[string]Handoff{
		r.ready:                                handoffFor("ready", 1),
		filepath.Join(r.dir, "pool-0_r0.json"): a,
		filepath.Join(r.dir, "pool-1_r0.json"): b,
	}
	// The first scan is done (startWatcher waited for ready.json, which it
	// wrote last, and a scan handles every file it lists).
	r.waitProcessed(t, OutcomeInvalid, 1)
	r.marker(t, "zz-marker.json")
	want[filepath.Join(r.dir, "zz-marker.json")] = handoffFor("zz-marker", 1)
	if got := r.sink.snapshot(); !reflect.DeepEqual(got, want) {
		t.Errorf("sink state:\n got %v\nwant %v", got, want)
	}
	if got := r.processed(OutcomeOK); got != 4 {
		t.Errorf("ok count = %v, want 4 (three files at start, one marker)", got)
	}
	if got := r.processed(OutcomeInvalid); got != 1 {
		t.Errorf("invalid count = %v, want 1", got)
	}
	// Both metrics are registered, every outcome pre-initialised.
	if n, err := testutil.GatherAndCount(r.reg, "llorch_handoff_files_processed_total"); err != nil || n != 5 {
		t.Errorf("llorch_handoff_files_processed_total series = %d, %v; want 5", n, err)
	}
	if n, err := testutil.GatherAndCount(r.reg, "llorch_handoff_processing_seconds"); err != nil || n != 1 {
		t.Errorf("llorch_handoff_processing_seconds series = %d, %v; want 1", n, err)
	}
}

func testCreate(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	h := handoffFor("pool-0", 4)
	path := writeHandoff(t, r.dir, "pool-0_r0.json", h)
	clocktest.WaitFor(t, 5*time.Second, "upsert", func() bool { return r.sink.holds(path, h) })
	r.marker(t, "zz-marker.json")
	if n := r.sink.count("upsert", path); n != 1 {
		t.Errorf("%d upserts for one created file, want 1", n)
	}
	if got := r.processed(OutcomeOK); got != 3 {
		t.Errorf("ok count = %v, want 3 (ready, file, marker)", got)
	}
}

func testReplace(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	h1 := handoffFor("pool-0", 4)
	path := writeHandoff(t, r.dir, "pool-0_r0.json", h1)
	clocktest.WaitFor(t, 5*time.Second, "first version", func() bool { return r.sink.holds(path, h1) })
	h2 := handoffFor("pool-0", 8)
	h2.SlotsFree, h2.PID, h2.EngineVersion = 5, 2000, "b4800"
	writeHandoff(t, r.dir, "pool-0_r0.json", h2)
	clocktest.WaitFor(t, 5*time.Second, "second version", func() bool { return r.sink.holds(path, h2) })
	// Replacing by rename never goes through "no file": the pool must not
	// flap to not-ready.
	if n := r.sink.count("remove", path); n != 0 {
		t.Errorf("%d removes during a replace by rename, want 0", n)
	}
}

// A replacement can carry the same size and modification time as the file
// it replaces: file times tick at the kernel's clock granularity (often a
// few ms), and an engine rewriting "pid" or "slots_free" keeps the size. The
// rename still puts a different file in place, and the watcher must see it.
func testReplaceSameStamp(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	h1 := handoffFor("pool-0", 4)
	h1.PID = 1111
	path := writeHandoff(t, r.dir, "pool-0_r0.json", h1)
	clocktest.WaitFor(t, 5*time.Second, "first version", func() bool { return r.sink.holds(path, h1) })
	old, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	h2 := h1
	h2.PID = 2222
	b, _ := json.Marshal(h2)
	if int64(len(b)) != old.Size() {
		t.Fatalf("test setup: new file is %d bytes, old %d", len(b), old.Size())
	}
	writeAtomic(t, r.dir, "pool-0_r0.json", b, func(tmp string) {
		if err := os.Chtimes(tmp, old.ModTime(), old.ModTime()); err != nil {
			t.Fatal(err)
		}
	})
	clocktest.WaitFor(t, 5*time.Second, "second version", func() bool { return r.sink.holds(path, h2) })
}

func testDelete(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	h := handoffFor("pool-0", 4)
	path := writeHandoff(t, r.dir, "pool-0_r0.json", h)
	clocktest.WaitFor(t, 5*time.Second, "upsert", func() bool { return r.sink.holds(path, h) })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 5*time.Second, "remove", func() bool { return r.sink.count("remove", path) == 1 })
	if r.sink.has(path) {
		t.Errorf("sink still holds %s after delete", path)
	}
	r.marker(t, "zz-marker.json")
	if got := r.processed(OutcomeRemoved); got != 1 {
		t.Errorf("removed count = %v, want 1", got)
	}
	if !r.sink.has(r.ready) {
		t.Errorf("deleting one file removed another")
	}
}

func testInvalid(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	files := []struct {
		name, data, outcome string
	}{
		{"not-json.json", `pool_id=pool-0`, OutcomeInvalid},
		{"truncated.json", `{"pool_id":"pool-0","engine_version":"b1","url":"http://h:1"`, OutcomeInvalid},
		{"no-url.json", `{"pool_id":"pool-0","engine_version":"b1"}`, OutcomeInvalid},
		{"bad-slots.json", `{"pool_id":"pool-0","engine_version":"b1","url":"http://h:1","slots":"4"}`, OutcomeInvalid},
		{"too-large.json", `{"pool_id":"pool-0","engine_version":"b1","url":"http://h:1"}` + strings.Repeat(" ", MaxFileBytes), OutcomeTooLarge},
	}
	want := map[string]float64{}
	for _, f := range files {
		writeAtomic(t, r.dir, f.name, []byte(f.data), nil)
		want[f.outcome]++
		// Each file is handled before the next is written, so the counts
		// are exact in both modes.
		r.waitProcessed(t, f.outcome, want[f.outcome])
	}
	r.marker(t, "zz-marker.json")
	for _, f := range files {
		path := filepath.Join(r.dir, f.name)
		if n := r.sink.count("upsert", path); n != 0 {
			t.Errorf("%s: %d upserts for an invalid file", f.name, n)
		}
	}
	for _, o := range []string{OutcomeInvalid, OutcomeTooLarge, OutcomeReadError} {
		if got := r.processed(o); got != want[o] {
			t.Errorf("%s count = %v, want %v", o, got, want[o])
		}
	}
	if got := r.processed(OutcomeOK); got != 2 {
		t.Errorf("ok count = %v, want 2 (ready, marker)", got)
	}
}

func testGarbageKeepsReplica(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	h := handoffFor("pool-0", 4)
	path := writeHandoff(t, r.dir, "pool-0_r0.json", h)
	clocktest.WaitFor(t, 5*time.Second, "upsert", func() bool { return r.sink.holds(path, h) })

	// A writer that renames garbage into place.
	writeAtomic(t, r.dir, "pool-0_r0.json", []byte(`{"pool_id":`), nil)
	r.waitProcessed(t, OutcomeInvalid, 1)
	// A careless writer that rewrites in place (a different size again, so
	// polling sees the change whatever the clock granularity).
	if err := os.WriteFile(path, []byte(`{"pool_id":"pool-0","url":`), 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitProcessed(t, OutcomeInvalid, 2)
	r.marker(t, "zz-marker.json")
	if n := r.sink.count("remove", path); n != 0 {
		t.Errorf("%d removes after garbage was written over a valid file, want 0", n)
	}
	if !r.sink.holds(path, h) {
		t.Errorf("sink lost the replica of %s: %v", path, r.sink.snapshot())
	}

	// A good file again replaces the kept replica.
	h2 := handoffFor("pool-0", 2)
	writeHandoff(t, r.dir, "pool-0_r0.json", h2)
	clocktest.WaitFor(t, 5*time.Second, "recovered version", func() bool { return r.sink.holds(path, h2) })
}

func testIgnoredNames(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	valid, err := json.Marshal(handoffFor("pool-9", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Valid handoff content under names a watcher must not read.
	names := []string{"notes.txt", ".hidden.json", "pool-9_r0.json.tmp", "pool-9_r0.json~", "pool-9_r0.JSON", "README"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(r.dir, n), valid, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(r.dir, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	r.marker(t, "zz-marker.json")
	for _, n := range names {
		path := filepath.Join(r.dir, n)
		if u, rm := r.sink.count("upsert", path), r.sink.count("remove", path); u+rm != 0 {
			t.Errorf("%s: %d upserts, %d removes; want it ignored", n, u, rm)
		}
	}
	if got := len(r.sink.snapshot()); got != 2 {
		t.Errorf("sink holds %d files, want 2 (ready, marker): %v", got, r.sink.snapshot())
	}
	for _, o := range []string{OutcomeInvalid, OutcomeTooLarge, OutcomeReadError, OutcomeRemoved} {
		if got := r.processed(o); got != 0 {
			t.Errorf("%s count = %v, want 0", o, got)
		}
	}
}

// A handoff file may be a symlink (a launcher that keeps its files
// elsewhere). Its content did not change, so it is loaded once, not on every
// poll.
func testSymlink(t *testing.T, mode Mode) {
	r := startWatcher(t, mode, nil)
	target := filepath.Join(t.TempDir(), "engine.json")
	h := handoffFor("pool-0", 4)
	b, _ := json.Marshal(h)
	if err := os.WriteFile(target, b, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(r.dir, "pool-0_r0.json")
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	clocktest.WaitFor(t, 5*time.Second, "upsert", func() bool { return r.sink.holds(link, h) })
	// Two later scans (polling) or events (fsnotify) have run after these.
	r.marker(t, "zz-marker1.json")
	r.marker(t, "zz-marker2.json")
	if n := r.sink.count("upsert", link); n != 1 {
		t.Errorf("%d upserts for an unchanged symlinked file, want 1", n)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	clocktest.WaitFor(t, 5*time.Second, "remove", func() bool { return r.sink.count("remove", link) == 1 })
}

func TestNewWatcher(t *testing.T) {
	t.Run("creates the runtime dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if _, err := NewWatcher(WatcherOptions{Dir: dir, Sink: newRecordingSink()}); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Fatalf("runtime dir not created: %v", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		w, err := NewWatcher(WatcherOptions{Dir: t.TempDir(), Sink: newRecordingSink()})
		if err != nil {
			t.Fatal(err)
		}
		if w.opts.Mode != ModeAuto || w.opts.PollInterval != time.Second || w.opts.Logger == nil {
			t.Errorf("defaults: mode %q, interval %v, logger %v", w.opts.Mode, w.opts.PollInterval, w.opts.Logger)
		}
	})
	t.Run("metrics registered twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		opts := WatcherOptions{Dir: t.TempDir(), Sink: newRecordingSink(), Registerer: reg}
		if _, err := NewWatcher(opts); err != nil {
			t.Fatal(err)
		}
		if _, err := NewWatcher(opts); err == nil {
			t.Fatal("second NewWatcher on the same registry: no error")
		}
	})
	t.Run("dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := NewWatcher(WatcherOptions{Dir: file, Sink: newRecordingSink()}); err == nil {
			t.Fatal("NewWatcher on a regular file: no error")
		}
	})
}

// A watcher stops promptly when its context is canceled, in every mode,
// even one that never saw a file.
func TestWatcherStops(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeFsnotify, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			w, err := NewWatcher(WatcherOptions{Dir: t.TempDir(), Mode: mode, PollInterval: time.Hour, Sink: newRecordingSink(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
}

// In fsnotify mode a runtime directory replaced under the watcher (moved
// away, a new one made in its place) is found by the periodic rescan: its
// files are loaded, the old ones removed.
func TestFsnotifyFindsAReplacedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "engines")
	sink := newRecordingSink()
	w, err := NewWatcher(WatcherOptions{Dir: dir, Mode: ModeFsnotify, PollInterval: 20 * time.Millisecond,
		RescanInterval: 100 * time.Millisecond, Sink: sink, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	old := writeHandoff(t, dir, "pool-0_r0.json", handoffFor("pool-0", 2))
	clocktest.WaitFor(t, 5*time.Second, "the first file", func() bool { return sink.has(old) })

	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fresh := writeHandoff(t, dir, "pool-1_r0.json", handoffFor("pool-1", 4))
	clocktest.WaitFor(t, 5*time.Second, "the replaced directory's file", func() bool { return sink.has(fresh) })
	// The old directory's file went with it (same name, gone from dir).
	clocktest.WaitFor(t, 5*time.Second, "the old file removed", func() bool { return !sink.has(old) })
	later := writeHandoff(t, dir, "pool-2_r0.json", handoffFor("pool-2", 1))
	clocktest.WaitFor(t, 5*time.Second, "a file written into the new directory", func() bool { return sink.has(later) })
}
