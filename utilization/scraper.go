package utilization

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/promtext"
)

// Target is one node agent to scrape.
type Target struct {
	NodeID  string
	Address string // the agent's external URL
}

// Scraper reads every target's /metrics on an interval. It tells when a
// target's scrapes start or stop failing (a log line on each change, and
// llorch_utilization_scrape_up and _failures_total per node), so an
// operator sees why placement fell back to registry state for a node.
type Scraper struct {
	targets  func() []Target
	interval time.Duration
	maxRate  int // scrapes per second at most
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger

	readings

	healthMu sync.Mutex
	health   map[string]*targetHealth // by node id

	pruned []Target // the list the readings were last pruned to (under readings' mu)
}

// targetHealth is one target's scrape record.
type targetHealth struct {
	up       bool
	failures uint64
}

var (
	_ Source    = (*Scraper)(nil)
	_ Versioned = (*Scraper)(nil)
)

// NewScraper scrapes targets() every interval; log (nil: slog.Default())
// hears when a target's scrapes start or stop failing.
func NewScraper(targets func() []Target, interval time.Duration, log *slog.Logger) *Scraper {
	if log == nil {
		log = slog.Default()
	}
	return &Scraper{
		targets: targets, interval: interval, now: time.Now, log: log, maxRate: DefaultMaxScrapeRate,
		client:   &http.Client{Timeout: interval},
		readings: readings{nodes: map[string]nodeReading{}},
		health:   map[string]*targetHealth{},
	}
}

// DefaultMaxScrapeRate bounds the embedded scraper's scrapes per second: a
// fleet beyond rate × interval nodes is scraped in turns, each node less
// often, so the control plane's cost stops growing with the fleet; its
// readings then age past the staleness bound and placement uses the
// heartbeats' (which carry the same load, GPU and speed figures). At the
// default interval that is 40 nodes scraped every 2 s; beyond a few
// hundred nodes, point --prometheus-url at the Prometheus that scrapes
// them anyway.
const DefaultMaxScrapeRate = 20

// Run scrapes until ctx is done: every interval, the next maxRate ×
// interval targets in turn (all of them in a small fleet).
func (s *Scraper) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	next := 0
	for {
		next = s.scrapeTurn(ctx, next)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scrapeTurn scrapes the targets' turn starting at next, at most maxRate ×
// interval of them, and returns where the next turn starts.
func (s *Scraper) scrapeTurn(ctx context.Context, next int) int {
	targets := s.targets()
	batch := max(1, int(float64(s.maxRate)*s.interval.Seconds()))
	if len(targets) <= batch {
		s.scrape(ctx, targets, targets)
		return 0
	}
	start := next % len(targets)
	turn := make([]Target, batch)
	for i := range turn {
		turn[i] = targets[(start+i)%len(targets)]
	}
	s.scrape(ctx, turn, targets)
	return (start + batch) % len(targets)
}

// ScrapeAll scrapes every target once, concurrently (at most 32 at a time).
// A failed scrape keeps the node's last reading, which ages into staleness.
func (s *Scraper) ScrapeAll(ctx context.Context) {
	targets := s.targets()
	s.scrape(ctx, targets, targets)
}

// scrape scrapes targets, concurrently (at most 32 at a time), and forgets
// the nodes that are not among all.
func (s *Scraper) scrape(ctx context.Context, targets, all []Target) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := s.scrapeOne(ctx, t)
			s.record(ctx, t, err)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.nodes[t.NodeID] = r
			s.mu.Unlock()
		}()
	}
	wg.Wait()
	defer s.version.Add(1)
	// Forget nodes that left the registry: only when the list changed
	// (targets returns the same slice while the fleet's membership stays).
	s.mu.Lock()
	same := len(all) == len(s.pruned) && (len(all) == 0 || &all[0] == &s.pruned[0])
	s.pruned = all
	s.mu.Unlock()
	if same {
		return
	}
	keep := make(map[string]bool, len(all))
	for _, t := range all {
		keep[t.NodeID] = true
	}
	s.mu.Lock()
	for id := range s.nodes {
		if !keep[id] {
			delete(s.nodes, id)
		}
	}
	s.mu.Unlock()
	s.healthMu.Lock()
	for id := range s.health {
		if !keep[id] {
			delete(s.health, id)
		}
	}
	s.healthMu.Unlock()
}

// record notes a scrape's outcome, logging when a target's scrapes start
// failing (or fail from the first) and when they work again. A scrape cut
// by shutdown is not a failure.
func (s *Scraper) record(ctx context.Context, t Target, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	s.healthMu.Lock()
	h, seen := s.health[t.NodeID]
	if !seen {
		h = &targetHealth{}
		s.health[t.NodeID] = h
	}
	was := h.up
	h.up = err == nil
	if err != nil {
		h.failures++
	}
	s.healthMu.Unlock()
	switch {
	case err != nil && (was || !seen):
		s.log.Warn("scrape of a node agent failing: placement uses registry state for its pools", "node_id", t.NodeID, "address", t.Address, "err", err)
	case err == nil && seen && !was:
		s.log.Info("scrape of a node agent working again", "node_id", t.NodeID, "address", t.Address)
	}
}

var (
	scrapeUpDesc = prometheus.NewDesc("llorch_utilization_scrape_up",
		"1 if the control plane's last scrape of the node agent's /metrics (for placement) succeeded.", []string{"node_id"}, nil)
	scrapeFailuresDesc = prometheus.NewDesc("llorch_utilization_scrape_failures_total",
		"Failed scrapes of the node agent's /metrics by the control plane (for placement).", []string{"node_id"}, nil)
)

var _ prometheus.Collector = (*Scraper)(nil)

// Describe implements prometheus.Collector.
func (s *Scraper) Describe(ch chan<- *prometheus.Desc) {
	ch <- scrapeUpDesc
	ch <- scrapeFailuresDesc
}

// Collect implements prometheus.Collector: every target scraped so far.
func (s *Scraper) Collect(ch chan<- prometheus.Metric) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	for id, h := range s.health {
		up := 0.0
		if h.up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(scrapeUpDesc, prometheus.GaugeValue, up, id)
		ch <- prometheus.MustNewConstMetric(scrapeFailuresDesc, prometheus.CounterValue, float64(h.failures), id)
	}
}

func (s *Scraper) scrapeOne(ctx context.Context, t Target) (nodeReading, error) {
	ctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(t.Address, "/")+"/metrics", nil)
	if err != nil {
		return nodeReading{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nodeReading{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nodeReading{}, fmt.Errorf("scrape %s: %s", t.Address, resp.Status)
	}
	return parseAgentMetrics(io.LimitReader(resp.Body, 32<<20), s.now())
}

// parseAgentMetrics reads the series placement uses from an agent's scrape.
func parseAgentMetrics(r io.Reader, at time.Time) (nodeReading, error) {
	fams, err := promtext.Parse(r)
	if err != nil {
		return nodeReading{}, fmt.Errorf("parse agent metrics: %w", err)
	}
	n := newNodeReading(at)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			n.record(name, promtext.Label(m, "pool_id"), promtext.Label(m, "gpu"), promtext.Value(m))
		}
	}
	return n, nil
}
