package handoff_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

// BenchmarkHandoffToReady measures the time from a handoff file being
// renamed into place to the agent's pool table holding it, with fsnotify and
// with the 1 s polling design it replaces. Each op replaces the file with a
// new engine_version and waits for the table to show it. Reported: p50 and
// p99 in milliseconds. The poll variant takes ~0.5 s per op: run it with a
// small -benchtime such as 40x (make bench does).
func BenchmarkHandoffToReady(b *testing.B) {
	for _, tc := range []struct {
		name     string
		mode     handoff.Mode
		interval time.Duration
	}{
		{"fsnotify", handoff.ModeFsnotify, time.Second},
		{"poll-1s", handoff.ModePoll, time.Second},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			table := pool.NewTable([]string{"pool-0"})
			w, err := handoff.NewWatcher(handoff.WatcherOptions{
				Dir: dir, Mode: tc.mode, PollInterval: tc.interval, Sink: table,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}()

			latencies := make([]time.Duration, 0, 1024)
			for i := 0; b.Loop(); i++ {
				if tc.mode == handoff.ModePoll {
					// Write at a random phase of the poll tick, as real
					// engines do; otherwise every op waits exactly one tick.
					b.StopTimer()
					time.Sleep(rand.N(tc.interval))
					b.StartTimer()
				}
				version := "b" + strconv.Itoa(i)
				begin := time.Now()
				if _, err := handoff.WriteFile(dir, handoff.Handoff{PoolID: "pool-0", EngineVersion: version, URL: "http://127.0.0.1:8081", SlotsTotal: 4, SlotsFree: 4}); err != nil {
					b.Fatal(err)
				}
				for {
					if st, _ := table.Status("pool-0"); st.Ready && st.EngineVersion == version {
						break
					}
					select {
					case <-table.Changes():
					case <-time.After(5 * time.Second):
						b.Fatalf("pool-0 never showed %s", version)
					}
				}
				latencies = append(latencies, time.Since(begin))
			}
			slices.Sort(latencies)
			q := func(p float64) float64 {
				return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
		})
	}
}
