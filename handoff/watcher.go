package handoff

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Sink receives the state of the runtime directory. Upsert is called for a
// new or replaced valid file, Remove when a file is gone. Calls come from one
// goroutine.
type Sink interface {
	Upsert(path string, h Handoff)
	Remove(path string)
}

// Outcomes of llorch_handoff_files_processed_total.
const (
	OutcomeOK        = "ok"
	OutcomeRemoved   = "removed"
	OutcomeInvalid   = "invalid"
	OutcomeTooLarge  = "too_large"
	OutcomeReadError = "read_error"
)

// Mode selects how the watcher learns about changes.
type Mode string

// Modes: ModeAuto uses fsnotify and falls back to polling when it fails.
const (
	ModeAuto     Mode = "auto"
	ModeFsnotify Mode = "fsnotify"
	ModePoll     Mode = "poll"
)

// ParseMode validates a --watch-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeFsnotify, ModePoll:
		return m, nil
	}
	return "", fmt.Errorf("watch mode %q: want auto, fsnotify or poll", s)
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	Dir          string
	Mode         Mode
	PollInterval time.Duration
	// RescanInterval is how often fsnotify mode re-reads the whole
	// directory anyway (default DefaultRescanInterval), as Prometheus'
	// file discovery does: a replaced runtime directory, or an event the
	// kernel dropped, is caught within it.
	RescanInterval time.Duration
	Sink           Sink
	Logger         *slog.Logger
	// Registerer receives the handoff metrics; nil skips them.
	Registerer prometheus.Registerer
}

// Watcher follows a runtime directory and keeps a Sink in step with its
// handoff files.
type Watcher struct {
	opts      WatcherOptions
	processed *prometheus.CounterVec
	latency   prometheus.Histogram
	// known maps each file the sink holds to its last seen modification,
	// so polling only re-reads what changed.
	known map[string]fileStamp
}

// fileStamp is what a scan compares to decide whether a file changed. Size
// and modification time alone miss a same-size replacement written within
// one tick of the file-time clock (a few ms on Linux), so the file's
// identity is compared too: a replacement renamed into place is a new file.
type fileStamp struct {
	info os.FileInfo
}

// unchanged reports whether info describes the file st was taken from, as
// it was then.
func (st fileStamp) unchanged(info os.FileInfo) bool {
	return st.info != nil && os.SameFile(st.info, info) &&
		st.info.ModTime().Equal(info.ModTime()) && st.info.Size() == info.Size()
}

// DefaultRescanInterval is fsnotify mode's full rescan period.
const DefaultRescanInterval = 30 * time.Second

// NewWatcher builds a Watcher and registers its metrics.
func NewWatcher(opts WatcherOptions) (*Watcher, error) {
	if opts.Mode == "" {
		opts.Mode = ModeAuto
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.RescanInterval <= 0 {
		opts.RescanInterval = DefaultRescanInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Watcher{
		opts: opts,
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_handoff_files_processed_total",
			Help: "Handoff file events handled, by outcome (ok, removed, invalid, too_large, read_error).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llorch_handoff_processing_seconds",
			Help:    "Time from noticing a handoff file change to the pool registry reflecting it.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		known: make(map[string]fileStamp),
	}
	for _, o := range []string{OutcomeOK, OutcomeRemoved, OutcomeInvalid, OutcomeTooLarge, OutcomeReadError} {
		w.processed.WithLabelValues(o)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(w.processed); err != nil {
			return nil, fmt.Errorf("register handoff metrics: %w", err)
		}
		if err := opts.Registerer.Register(w.latency); err != nil {
			return nil, fmt.Errorf("register handoff metrics: %w", err)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("runtime dir: %w", err)
	}
	return w, nil
}

// Run reads the files already present, then follows changes until ctx is
// done.
func (w *Watcher) Run(ctx context.Context) error {
	if w.opts.Mode != ModePoll {
		fsw, err := w.startFsnotify()
		if err == nil {
			defer fsw.Close()
			w.opts.Logger.Info("watching handoff files", "dir", w.opts.Dir, "mode", ModeFsnotify)
			w.rescan()
			return w.runFsnotify(ctx, fsw)
		}
		if w.opts.Mode == ModeFsnotify {
			return err
		}
		w.opts.Logger.Warn("fsnotify unavailable, polling the runtime dir instead", "dir", w.opts.Dir, "interval", w.opts.PollInterval, "err", err)
	}
	w.opts.Logger.Info("watching handoff files", "dir", w.opts.Dir, "mode", ModePoll, "interval", w.opts.PollInterval)
	w.rescan()
	t := time.NewTicker(w.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.rescan()
		}
	}
}

func (w *Watcher) startFsnotify() (*fsnotify.Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("fsnotify: %w", err)
	}
	// Watch before the first scan so no file written in between is missed.
	if err := fsw.Add(w.opts.Dir); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("fsnotify watch %s: %w", w.opts.Dir, err)
	}
	return fsw, nil
}

func (w *Watcher) runFsnotify(ctx context.Context, fsw *fsnotify.Watcher) error {
	rescan := time.NewTimer(w.opts.RescanInterval)
	defer rescan.Stop()
	lost := false // the directory itself went: its watch with it
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rescan.C:
			// Re-arm the watch (a directory replaced since was not being
			// watched; on a watched one Add changes nothing), then resync.
			if err := fsw.Add(w.opts.Dir); err != nil {
				if !lost {
					w.opts.Logger.Error("runtime dir gone: cannot watch it", "dir", w.opts.Dir, "err", err)
				}
				lost = true
				rescan.Reset(w.opts.PollInterval)
				continue
			}
			if lost {
				w.opts.Logger.Info("runtime dir back: watching it again", "dir", w.opts.Dir)
			}
			lost = false
			w.rescan()
			rescan.Reset(w.opts.RescanInterval)
		case ev, ok := <-fsw.Events:
			if !ok {
				return errors.New("fsnotify: event channel closed")
			}
			if filepath.Clean(ev.Name) == filepath.Clean(w.opts.Dir) && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
				// The directory was removed or moved away: look for a new
				// one at the poll interval until it is there.
				w.opts.Logger.Warn("runtime dir removed or replaced: rescanning until it is back", "dir", w.opts.Dir)
				rescan.Reset(w.opts.PollInterval)
				continue
			}
			if !IsHandoffName(filepath.Base(ev.Name)) {
				continue
			}
			switch {
			case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
				// Rename reports the old name: the file moved away.
				w.remove(ev.Name, time.Now())
			case ev.Has(fsnotify.Create), ev.Has(fsnotify.Write):
				w.load(ev.Name, time.Now())
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("fsnotify: error channel closed")
			}
			// An overflow loses events: re-read the directory to resync.
			w.opts.Logger.Warn("fsnotify error, rescanning runtime dir", "dir", w.opts.Dir, "err", err)
			w.rescan()
		}
	}
}

// rescan brings the sink in step with the directory: new or changed files
// are loaded, vanished ones removed.
func (w *Watcher) rescan() {
	start := time.Now()
	entries, err := os.ReadDir(w.opts.Dir)
	if err != nil {
		w.opts.Logger.Error("read runtime dir", "dir", w.opts.Dir, "err", err)
		return
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.IsDir() || !IsHandoffName(e.Name()) {
			continue
		}
		path := filepath.Join(w.opts.Dir, e.Name())
		seen[path] = true
		// os.Stat, as load uses, rather than e.Info: for a symlink the two
		// differ and the file would be re-read on every scan. An error
		// (removed since ReadDir, dangling link) is left to load.
		if info, err := os.Stat(path); err == nil && w.known[path].unchanged(info) {
			continue
		}
		w.load(path, start)
	}
	for path := range w.known {
		if !seen[path] {
			w.remove(path, start)
		}
	}
}

func (w *Watcher) load(path string, since time.Time) {
	info, statErr := os.Stat(path)
	if statErr == nil && info.IsDir() {
		return // a directory named *.json is not a handoff file
	}
	h, err := ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		w.remove(path, since)
		return
	case errors.Is(err, ErrTooLarge):
		w.skip(path, OutcomeTooLarge, err)
	case errors.Is(err, ErrInvalid):
		w.skip(path, OutcomeInvalid, err)
	case err != nil:
		w.skip(path, OutcomeReadError, err)
	default:
		w.opts.Sink.Upsert(path, h)
		w.processed.WithLabelValues(OutcomeOK).Inc()
		w.latency.Observe(time.Since(since).Seconds())
		w.opts.Logger.Debug("handoff file loaded", "path", path, "pool_id", h.PoolID, "url", h.URL)
	}
	// Remember bad files too, so polling does not re-read and re-log them
	// until they change.
	if statErr == nil {
		w.known[path] = fileStamp{info: info}
	}
}

// skip counts and logs a file that cannot be used. A replica the sink
// already holds from an earlier good version of the file is kept: a partial
// write by a careless writer must not flap the pool.
func (w *Watcher) skip(path, outcome string, err error) {
	w.processed.WithLabelValues(outcome).Inc()
	w.opts.Logger.Warn("handoff file skipped", "path", path, "outcome", outcome, "err", err)
}

func (w *Watcher) remove(path string, since time.Time) {
	if _, ok := w.known[path]; !ok {
		return
	}
	delete(w.known, path)
	w.opts.Sink.Remove(path)
	w.processed.WithLabelValues(OutcomeRemoved).Inc()
	w.latency.Observe(time.Since(since).Seconds())
	w.opts.Logger.Info("handoff file removed", "path", path)
}
