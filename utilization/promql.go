package utilization

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// PromQL reads the fleet's utilisation from a Prometheus server that
// scrapes the agents (through /v2/sd). Each reading is stamped with the
// sample's own time, so a Prometheus that stopped scraping a node yields
// stale readings, which placement ignores.
type PromQL struct {
	api      v1.API
	interval time.Duration

	readings // its mu also guards err
	err      error
}

var (
	_ Source    = (*PromQL)(nil)
	_ Versioned = (*PromQL)(nil)
)

// queries are the instant queries one refresh runs: the series themselves.
var queries = []string{seriesDeferred, seriesProcessing, seriesVRAMFree, seriesTokens, seriesTokenSeconds, seriesPrompt, seriesPromptSecs, seriesGPUUtil, seriesGPUFree}

// ageQuery dates each node's readings by when Prometheus last scraped its
// agent: every scrape of an agent carries llorch_scrape_collector_success
// for each collector. An instant query stamps its results with the
// evaluation time, not the samples' own, so without it a node Prometheus
// last scraped minutes ago (within its lookback) would read as fresh.
// (timestamp() over several metric names at once fails on a real
// Prometheus: dropping __name__ makes their label sets collide.)
const ageQuery = `min by (node_id) (timestamp(llorch_scrape_collector_success))`

// NewPromQL queries the Prometheus server at url every interval.
func NewPromQL(url string, interval time.Duration) (*PromQL, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", url, err)
	}
	return &PromQL{api: v1.NewAPI(c), interval: interval, readings: readings{nodes: map[string]nodeReading{}}}, nil
}

// Run refreshes until ctx is done, logging when refreshes start or stop
// failing (not every failure: Prometheus down would flood the log).
func (p *PromQL) Run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	failing := ""
	for {
		err := p.Refresh(ctx)
		switch {
		case err != nil && err.Error() != failing && ctx.Err() == nil:
			failing = err.Error()
			log.Warn("PromQL refresh failing: placement falls back to registry state", "err", err)
		case err == nil && failing != "":
			failing = ""
			log.Info("PromQL refresh working again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var promqlUpDesc = prometheus.NewDesc("llorch_utilization_promql_up",
	"1 if the control plane's last PromQL refresh of utilisation (for placement) succeeded.", nil, nil)

var _ prometheus.Collector = (*PromQL)(nil)

// Describe implements prometheus.Collector.
func (p *PromQL) Describe(ch chan<- *prometheus.Desc) { ch <- promqlUpDesc }

// Collect implements prometheus.Collector.
func (p *PromQL) Collect(ch chan<- prometheus.Metric) {
	up := 1.0
	if p.Err() != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(promqlUpDesc, prometheus.GaugeValue, up)
}

// Err is the last refresh's error, nil if it succeeded.
func (p *PromQL) Err() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.err
}

// Refresh runs the queries once and replaces the snapshot. A failed
// refresh keeps the last snapshot, which ages into staleness, and sets Err.
func (p *PromQL) Refresh(ctx context.Context) error {
	err := p.refresh(ctx)
	if err != nil {
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
	}
	return err
}

func (p *PromQL) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.interval)
	defer cancel()
	nodes := map[string]nodeReading{}
	node := func(id string, at time.Time) nodeReading {
		n, ok := nodes[id]
		if !ok {
			n = newNodeReading(at)
		}
		// A node's reading is as old as its oldest sample.
		if at.Before(n.at) {
			n.at = at
		}
		nodes[id] = n
		return n
	}
	for _, q := range queries {
		res, _, _, err := p.api.Query(ctx, q, time.Now())
		if err != nil {
			return fmt.Errorf("promql %s: %w", q, err)
		}
		vec, ok := res.(model.Vector)
		if !ok {
			return fmt.Errorf("promql %s: want a vector, got %s", q, res.Type())
		}
		for _, s := range vec {
			nodeID := string(s.Metric["node_id"])
			if nodeID == "" {
				continue
			}
			node(nodeID, s.Timestamp.Time()).record(q, string(s.Metric["pool_id"]), string(s.Metric["gpu"]), float64(s.Value))
		}
	}
	if err := p.applyAges(ctx, nodes); err != nil {
		return err
	}
	p.mu.Lock()
	p.nodes, p.err = nodes, nil
	p.mu.Unlock()
	p.version.Add(1)
	return nil
}

// applyAges dates each node's reading by its oldest sample (ageQuery).
func (p *PromQL) applyAges(ctx context.Context, nodes map[string]nodeReading) error {
	res, _, _, err := p.api.Query(ctx, ageQuery, time.Now())
	if err != nil {
		return fmt.Errorf("promql %s: %w", ageQuery, err)
	}
	vec, ok := res.(model.Vector)
	if !ok {
		return fmt.Errorf("promql %s: want a vector, got %s", ageQuery, res.Type())
	}
	for _, s := range vec {
		n, ok := nodes[string(s.Metric["node_id"])]
		if !ok || math.IsNaN(float64(s.Value)) {
			continue
		}
		if at := time.UnixMilli(int64(math.Round(float64(s.Value) * 1e3))); at.Before(n.at) {
			n.at = at
			nodes[string(s.Metric["node_id"])] = n
		}
	}
	return nil
}
