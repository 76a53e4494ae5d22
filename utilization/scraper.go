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
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger

	readings

	healthMu sync.Mutex
	health   map[string]*targetHealth // by node id
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
		targets: targets, interval: interval, now: time.Now, log: log,
		client:   &http.Client{Timeout: interval},
		readings: readings{nodes: map[string]nodeReading{}},
		health:   map[string]*targetHealth{},
	}
}

// Run scrapes until ctx is done.
func (s *Scraper) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.ScrapeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ScrapeAll scrapes every target once, concurrently (at most 32 at a time).
// A failed scrape keeps the node's last reading, which ages into staleness.
func (s *Scraper) ScrapeAll(ctx context.Context) {
	targets := s.targets()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := s.scrape(ctx, t)
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
	// Forget nodes that left the registry.
	keep := make(map[string]bool, len(targets))
	for _, t := range targets {
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
	s.version.Add(1)
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

func (s *Scraper) scrape(ctx context.Context, t Target) (nodeReading, error) {
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
