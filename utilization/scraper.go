package utilization

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/llorch/llorch/promtext"
)

// Target is one node agent to scrape.
type Target struct {
	NodeID  string
	Address string // the agent's external URL
}

// Scraper reads every target's /metrics on an interval.
type Scraper struct {
	targets  func() []Target
	interval time.Duration
	client   *http.Client
	now      func() time.Time

	readings
}

var (
	_ Source    = (*Scraper)(nil)
	_ Versioned = (*Scraper)(nil)
)

// NewScraper scrapes targets() every interval.
func NewScraper(targets func() []Target, interval time.Duration) *Scraper {
	return &Scraper{
		targets: targets, interval: interval, now: time.Now,
		client:   &http.Client{Timeout: interval},
		readings: readings{nodes: map[string]nodeReading{}},
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
	s.version.Add(1)
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
