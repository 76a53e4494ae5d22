package enginepoll

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/simengine"
)

// The poller against engines, with the exporter's collector reading it, is
// tested in package exporter (engine_test.go).

func simEngine(t *testing.T) *httptest.Server {
	t.Helper()
	e := httptest.NewServer(simengine.New(simengine.Config{Parallel: 1, Metrics: true, TokensPerSecond: 20}).Handler())
	t.Cleanup(e.Close)
	return e
}

// TestRunStops: Run polls at once and stops with its context.
func TestRunStops(t *testing.T) {
	live := simEngine(t)
	table := pool.NewTable(nil)
	table.Upsert("/run/p_r0.json", handoff.Handoff{PoolID: "p", URL: live.URL, SlotsTotal: 1, SlotsFree: 1})
	scraper := New(table, nil, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		scraper.Run(ctx)
	}()
	clocktest.WaitFor(t, 5*time.Second, "Run to poll the engine", func() bool { return scraper.Stats()["p"].Up })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestSum(t *testing.T) {
	at := time.Now()
	slots := Stats{URL: "http://a", At: at.Add(time.Second), Up: true, MetricsUp: true, SlotsUp: true, BusySource: BusyFromSlots,
		SlotsBusy: 2, SlotsTotal: 2, RequestsProcessing: 2, RequestsDeferred: 1, TokensPredictedTotal: 10, PredictedSeconds: 1, PromptTokensTotal: 5, PromptSecondsTotal: 0.5}
	noSlots := Stats{URL: "http://b", At: at, Up: true, MetricsUp: true, BusySource: BusyFromMetrics,
		SlotsBusy: 1, RequestsProcessing: 1, TokensPredictedTotal: 20, PredictedSeconds: 2, PromptTokensTotal: 1, PromptSecondsTotal: 0.1}
	down := Stats{URL: "http://c", At: at.Add(2 * time.Second)}
	tests := []struct {
		name string
		in   []Stats
		want Stats
	}{
		{"none", nil, Stats{}},
		{"one replica is itself", []Stats{slots}, slots},
		{"two: sums, the oldest poll, the weaker busy source, up only if both answered", []Stats{slots, noSlots},
			Stats{URL: "http://a", At: at, Up: true, MetricsUp: true, BusySource: BusyFromMetrics, SlotsBusy: 3, SlotsTotal: 2,
				RequestsProcessing: 3, RequestsDeferred: 1, TokensPredictedTotal: 30, PredictedSeconds: 3, PromptTokensTotal: 6, PromptSecondsTotal: 0.6}},
		{"one down: the other's counts, not up", []Stats{down, slots},
			Stats{URL: "http://c", At: at.Add(time.Second), BusySource: BusyFromSlots, SlotsBusy: 2, SlotsTotal: 2,
				RequestsProcessing: 2, RequestsDeferred: 1, TokensPredictedTotal: 10, PredictedSeconds: 1, PromptTokensTotal: 5, PromptSecondsTotal: 0.5}},
		{"all down: busy unknown", []Stats{down, down}, Stats{URL: "http://c", At: at.Add(2 * time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sum(tt.in)
			got.At, tt.want.At = got.At.Round(0), tt.want.At.Round(0)
			if got != tt.want {
				t.Errorf("Sum =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

// A poll tells the pool table the engine's own speeds, from its counters,
// so heartbeats carry them to placement.
func TestLoadCarriesTheEnginesSpeeds(t *testing.T) {
	at := time.Now()
	for _, tc := range []struct {
		name                 string
		st                   Stats
		decode, prompt, busy float64
	}{
		{"counters", Stats{At: at, Up: true, MetricsUp: true, BusySource: BusyFromMetrics, SlotsBusy: 1,
			TokensPredictedTotal: 300, PredictedSeconds: 2, PromptTokensTotal: 1000, PromptSecondsTotal: 0.5}, 150, 2000, 1},
		{"no time yet", Stats{At: at, Up: true, SlotsUp: true, BusySource: BusyFromSlots, SlotsBusy: 2}, 0, 0, 2},
		{"nothing answered", Stats{At: at}, 0, 0, 0},
	} {
		l := tc.st.Load()
		if l.DecodeTPS != tc.decode || l.PromptTPS != tc.prompt || float64(l.Busy) != tc.busy {
			t.Errorf("%s: Load() = %+v, want decode %v, prompt %v, busy %v", tc.name, l, tc.decode, tc.prompt, tc.busy)
		}
	}
}
