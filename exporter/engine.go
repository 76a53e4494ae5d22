package exporter

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/pool"
)

// Where EngineStats.BusySource took the busy slots from.
const (
	BusyFromSlots   = "slots"   // GET /slots: the slots with is_processing
	BusyFromMetrics = "metrics" // llamacpp:requests_processing, when /slots is off
)

// EngineStats is one poll of a replica's engine, or the sum of a pool's
// (see Stats). /metrics and /slots are asked independently: operators run
// llama-server with --no-slots (its /slots shows prompts), and what one
// endpoint answers is kept when the other fails.
type EngineStats struct {
	// ReplicaID names the replica polled; empty in a pool's sum.
	ReplicaID string
	URL       string
	// At is when the poll began.
	At time.Time
	// MetricsUp and SlotsUp say which endpoints answered; Up is either.
	Up, MetricsUp, SlotsUp bool
	// BusySource is where SlotsBusy comes from (BusyFromSlots or
	// BusyFromMetrics); empty when neither endpoint answered and the busy
	// slots are unknown.
	BusySource string
	SlotsBusy  int
	// SlotsTotal is the slots /slots listed; 0 when it did not answer.
	SlotsTotal int
	// The engine's llamacpp:* series, valid when MetricsUp.
	RequestsProcessing   float64
	RequestsDeferred     float64
	TokensPredictedTotal float64
	PredictedSeconds     float64
	PromptTokensTotal    float64
	PromptSecondsTotal   float64
}

// Load is what the poll tells the pool table: the busy slots, the deferred
// requests and when, or an unknown load when neither endpoint answered.
// Deferred is 0 when /metrics did not answer.
func (st EngineStats) Load() pool.Load {
	if st.BusySource == "" {
		return pool.Load{}
	}
	return pool.Load{Busy: st.SlotsBusy, Deferred: int(math.Round(st.RequestsDeferred)), At: st.At}
}

// PoolLister lists the pools whose engines to scrape (the pool table).
type PoolLister interface {
	Snapshot() []api.PoolState
}

// LoadSink receives each poll of a replica's engine (the pool table, so
// heartbeats report live, dated free slots and deferred requests). A load
// that is not Known says the poll failed.
type LoadSink interface {
	SetLoad(poolID, replicaID string, load pool.Load)
}

var _ LoadSink = (*pool.Table)(nil)

// EngineScraper polls the engine of every replica of every ready pool
// (/metrics and /slots) off the scrape path.
type EngineScraper struct {
	pools    PoolLister
	sink     LoadSink
	client   *http.Client
	interval time.Duration

	mu    sync.Mutex
	stats map[string][]EngineStats // by pool id, its replicas in the snapshot's order
}

// NewEngineScraper polls the engines of pools every interval.
func NewEngineScraper(pools PoolLister, sink LoadSink, interval time.Duration) *EngineScraper {
	return &EngineScraper{
		pools: pools, sink: sink, interval: interval,
		client: &http.Client{Timeout: interval},
		stats:  map[string][]EngineStats{},
	}
}

// Run polls until ctx is done.
func (s *EngineScraper) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// target is one engine to poll.
type target struct {
	poolID, replicaID, url string
}

// targets lists the engines of the ready pools: each replica's, or the
// pool's URL for a lister that reports no replicas.
func targets(pools []api.PoolState) []target {
	var out []target
	for _, p := range pools {
		if !p.Ready {
			continue
		}
		if len(p.Replicas) == 0 {
			if p.URL != "" {
				out = append(out, target{poolID: p.PoolID, url: p.URL})
			}
			continue
		}
		for _, r := range p.Replicas {
			if r.Ready && r.URL != "" {
				out = append(out, target{poolID: p.PoolID, replicaID: r.ReplicaID, url: r.URL})
			}
		}
	}
	return out
}

// Poll scrapes every ready replica's engine once, concurrently.
func (s *EngineScraper) Poll(ctx context.Context) {
	ts := targets(s.pools.Snapshot())
	results := make([]EngineStats, len(ts))
	var wg sync.WaitGroup
	for i, tg := range ts {
		wg.Go(func() { results[i] = s.scrape(ctx, tg) })
	}
	wg.Wait()
	next := make(map[string][]EngineStats)
	for i, tg := range ts {
		next[tg.poolID] = append(next[tg.poolID], results[i])
	}
	s.mu.Lock()
	s.stats = next
	s.mu.Unlock()
	if s.sink == nil {
		return
	}
	for i, tg := range ts {
		s.sink.SetLoad(tg.poolID, tg.replicaID, results[i].Load())
	}
}

// scrape asks the engine's /metrics and /slots at once, each on its own:
// a hung or disabled endpoint costs only its own series.
func (s *EngineScraper) scrape(ctx context.Context, tg target) EngineStats {
	st := EngineStats{ReplicaID: tg.replicaID, URL: tg.url, At: time.Now()}
	c := engine.New(tg.url, s.client)
	ctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	var (
		m                    engine.Metrics
		slots                []engine.Slot
		metricsErr, slotsErr error
		wg                   sync.WaitGroup
	)
	wg.Go(func() { m, metricsErr = c.Metrics(ctx) })
	wg.Go(func() { slots, slotsErr = c.Slots(ctx) })
	wg.Wait()
	if metricsErr == nil {
		st.MetricsUp = true
		st.RequestsProcessing, st.RequestsDeferred = m.RequestsProcessing, m.RequestsDeferred
		st.TokensPredictedTotal, st.PredictedSeconds = m.TokensPredictedTotal, m.PredictedSeconds
		st.PromptTokensTotal, st.PromptSecondsTotal = m.PromptTokensTotal, m.PromptSecondsTotal
		st.BusySource, st.SlotsBusy = BusyFromMetrics, max(0, int(math.Round(m.RequestsProcessing)))
	}
	if slotsErr == nil {
		st.SlotsUp = true
		st.SlotsTotal = len(slots)
		st.BusySource, st.SlotsBusy = BusyFromSlots, 0
		for _, sl := range slots {
			if sl.IsProcessing {
				st.SlotsBusy++
			}
		}
	}
	st.Up = st.MetricsUp || st.SlotsUp
	return st
}

// ReplicaStats returns the last poll of each replica's engine, by pool
// id.
func (s *EngineScraper) ReplicaStats() map[string][]EngineStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]EngineStats, len(s.stats))
	for k, v := range s.stats {
		out[k] = slices.Clone(v)
	}
	return out
}

// Stats returns the last poll by pool id, summed over the pool's replicas
// (see Sum).
func (s *EngineScraper) Stats() map[string]EngineStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]EngineStats, len(s.stats))
	for k, v := range s.stats {
		out[k] = Sum(v)
	}
	return out
}

// Sum folds the polls of a pool's replicas into the pool's: Up, MetricsUp
// and SlotsUp when every replica's engine answered; the counts summed over
// the replicas that answered (busy slots over those whose busy slots are
// known, /metrics series over those whose /metrics answered); At the
// oldest poll; URL the first replica's. BusySource is empty when no
// replica's busy slots are known, BusyFromMetrics when some came from
// /metrics, else BusyFromSlots.
func Sum(replicas []EngineStats) EngineStats {
	if len(replicas) == 0 {
		return EngineStats{}
	}
	sum := EngineStats{URL: replicas[0].URL, At: replicas[0].At, Up: true, MetricsUp: true, SlotsUp: true}
	for _, r := range replicas {
		if r.At.Before(sum.At) {
			sum.At = r.At
		}
		sum.Up = sum.Up && r.Up
		sum.MetricsUp = sum.MetricsUp && r.MetricsUp
		sum.SlotsUp = sum.SlotsUp && r.SlotsUp
		switch {
		case r.BusySource == "":
		case sum.BusySource == "" || r.BusySource == BusyFromMetrics:
			sum.BusySource = r.BusySource
		}
		sum.SlotsBusy += r.SlotsBusy
		sum.SlotsTotal += r.SlotsTotal
		sum.RequestsProcessing += r.RequestsProcessing
		sum.RequestsDeferred += r.RequestsDeferred
		sum.TokensPredictedTotal += r.TokensPredictedTotal
		sum.PredictedSeconds += r.PredictedSeconds
		sum.PromptTokensTotal += r.PromptTokensTotal
		sum.PromptSecondsTotal += r.PromptSecondsTotal
	}
	return sum
}

// EngineCollector exports the scraper's last poll under llorch names.
type EngineCollector struct {
	scraper *EngineScraper

	up, endpointUp, processing, deferred, busy, predicted, predictedSeconds, prompt, promptSeconds *prometheus.Desc
}

var _ Collector = (*EngineCollector)(nil)

// NewEngineCollector exports s.
func NewEngineCollector(s *EngineScraper) *EngineCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("llorch_pool_"+name, help, []string{"pool_id"}, nil)
	}
	return &EngineCollector{
		scraper: s,
		up:      d("engine_scrape_up", "1 if the pool's engine answered /metrics or /slots at the last poll."),
		endpointUp: prometheus.NewDesc("llorch_pool_engine_endpoint_up",
			"1 if the pool's engine answered this endpoint at the last poll (/slots answers 501 under --no-slots).",
			[]string{"pool_id", "endpoint"}, nil),
		processing: d("requests_processing", "Requests the engine is processing (llamacpp:requests_processing)."),
		deferred:   d("requests_deferred", "Requests waiting for a free slot (llamacpp:requests_deferred)."),
		busy: d("slots_busy",
			"Engine slots processing a request: from /slots, else llamacpp:requests_processing when /slots does not answer."),
		predicted: d("tokens_predicted_total", "Tokens generated by the engine since it started (llamacpp:tokens_predicted_total)."),
		predictedSeconds: d("tokens_predicted_seconds_total",
			"Slot-seconds spent generating since the engine started (llamacpp:tokens_predicted_seconds_total); tokens / seconds is one slot's speed."),
		prompt: d("prompt_tokens_total", "Prompt tokens processed by the engine since it started (llamacpp:prompt_tokens_total)."),
		promptSeconds: d("prompt_seconds_total",
			"Seconds spent processing prompts since the engine started (llamacpp:prompt_seconds_total); prompt tokens / seconds is the prompt speed."),
	}
}

// Update implements Collector. Series are per pool, summed over its
// replicas (see Sum): a pool whose engines were polled exports its
// scrape_up and both endpoint_up series (1 when every replica's engine
// answered); the /metrics series when some replica's /metrics answered;
// slots_busy when some replica's busy slots are known.
func (c *EngineCollector) Update(ch chan<- prometheus.Metric) error {
	stats := c.scraper.ReplicaStats()
	if len(stats) == 0 {
		return ErrNoData
	}
	for id, replicas := range stats {
		st := Sum(replicas)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b2f(st.Up), id)
		ch <- prometheus.MustNewConstMetric(c.endpointUp, prometheus.GaugeValue, b2f(st.MetricsUp), id, "metrics")
		ch <- prometheus.MustNewConstMetric(c.endpointUp, prometheus.GaugeValue, b2f(st.SlotsUp), id, "slots")
		if st.BusySource != "" {
			ch <- prometheus.MustNewConstMetric(c.busy, prometheus.GaugeValue, float64(st.SlotsBusy), id)
		}
		if !slices.ContainsFunc(replicas, func(r EngineStats) bool { return r.MetricsUp }) {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.processing, prometheus.GaugeValue, st.RequestsProcessing, id)
		ch <- prometheus.MustNewConstMetric(c.deferred, prometheus.GaugeValue, st.RequestsDeferred, id)
		ch <- prometheus.MustNewConstMetric(c.predicted, prometheus.CounterValue, st.TokensPredictedTotal, id)
		ch <- prometheus.MustNewConstMetric(c.predictedSeconds, prometheus.CounterValue, st.PredictedSeconds, id)
		ch <- prometheus.MustNewConstMetric(c.prompt, prometheus.CounterValue, st.PromptTokensTotal, id)
		ch <- prometheus.MustNewConstMetric(c.promptSeconds, prometheus.CounterValue, st.PromptSecondsTotal, id)
	}
	return nil
}
