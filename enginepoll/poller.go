package enginepoll

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/pool"
)

// Where Stats.BusySource took the busy slots from.
const (
	BusyFromSlots   = "slots"   // GET /slots: the slots with is_processing
	BusyFromMetrics = "metrics" // llamacpp:requests_processing, when /slots is off
)

// Stats is one poll of a replica's engine, or the sum of a pool's
// (see Sum). /metrics and /slots are asked independently: operators run
// llama-server with --no-slots (its /slots shows prompts), and what one
// endpoint answers is kept when the other fails.
type Stats struct {
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
func (st Stats) Load() pool.Load {
	if st.BusySource == "" {
		return pool.Load{}
	}
	l := pool.Load{Busy: st.SlotsBusy, Deferred: int(math.Round(st.RequestsDeferred)), At: st.At}
	if st.PredictedSeconds > 0 {
		l.DecodeTPS = st.TokensPredictedTotal / st.PredictedSeconds
	}
	if st.PromptSecondsTotal > 0 {
		l.PromptTPS = st.PromptTokensTotal / st.PromptSecondsTotal
	}
	return l
}

// PoolLister lists the pools whose engines to poll (the pool table).
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

// Poller polls the engine of every replica of every ready pool
// (/metrics and /slots) every interval, keeps the last poll for the
// exporter, and writes each replica's load into a LoadSink.
type Poller struct {
	pools    PoolLister
	sink     LoadSink
	client   *http.Client
	interval time.Duration

	mu    sync.Mutex
	stats map[string][]Stats // by pool id, its replicas in the snapshot's order
}

// New polls the engines of pools every interval; sink may be nil.
func New(pools PoolLister, sink LoadSink, interval time.Duration) *Poller {
	return &Poller{
		pools: pools, sink: sink, interval: interval,
		client: &http.Client{Timeout: interval},
		stats:  map[string][]Stats{},
	}
}

// Run polls until ctx is done.
func (p *Poller) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.Poll(ctx)
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
func (p *Poller) Poll(ctx context.Context) {
	ts := targets(p.pools.Snapshot())
	results := make([]Stats, len(ts))
	var wg sync.WaitGroup
	for i, tg := range ts {
		wg.Go(func() { results[i] = p.scrape(ctx, tg) })
	}
	wg.Wait()
	next := make(map[string][]Stats)
	for i, tg := range ts {
		next[tg.poolID] = append(next[tg.poolID], results[i])
	}
	p.mu.Lock()
	p.stats = next
	p.mu.Unlock()
	if p.sink == nil {
		return
	}
	for i, tg := range ts {
		p.sink.SetLoad(tg.poolID, tg.replicaID, results[i].Load())
	}
}

// scrape asks the engine's /metrics and /slots at once, each on its own:
// a hung or disabled endpoint costs only its own series.
func (p *Poller) scrape(ctx context.Context, tg target) Stats {
	st := Stats{ReplicaID: tg.replicaID, URL: tg.url, At: time.Now()}
	c := engine.New(tg.url, p.client)
	ctx, cancel := context.WithTimeout(ctx, p.interval)
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
func (p *Poller) ReplicaStats() map[string][]Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]Stats, len(p.stats))
	for k, v := range p.stats {
		out[k] = slices.Clone(v)
	}
	return out
}

// Stats returns the last poll by pool id, summed over the pool's replicas
// (see Sum).
func (p *Poller) Stats() map[string]Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Stats, len(p.stats))
	for k, v := range p.stats {
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
func Sum(replicas []Stats) Stats {
	if len(replicas) == 0 {
		return Stats{}
	}
	sum := Stats{URL: replicas[0].URL, At: replicas[0].At, Up: true, MetricsUp: true, SlotsUp: true}
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
