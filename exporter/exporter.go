package exporter

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector is one source of metrics. Update sends its metrics; an error
// marks this collector failed for the scrape without affecting the others.
type Collector interface {
	Update(ch chan<- prometheus.Metric) error
}

// ErrNoData is returned by a collector with nothing to report yet (no GPU
// source chosen, first poll pending): not a failure.
var ErrNoData = errors.New("collector returned no data")

// Exporter runs named collectors concurrently on each scrape.
type Exporter struct {
	collectors map[string]Collector
	log        *slog.Logger
	duration   *prometheus.Desc
	success    *prometheus.Desc
}

var _ prometheus.Collector = (*Exporter)(nil)

// New returns an Exporter of the given collectors, by name.
func New(collectors map[string]Collector, log *slog.Logger) *Exporter {
	if log == nil {
		log = slog.Default()
	}
	return &Exporter{
		collectors: collectors,
		log:        log,
		duration: prometheus.NewDesc("llorch_scrape_collector_duration_seconds",
			"Time a collector took to serialise its snapshot during this scrape.", []string{"collector"}, nil),
		success: prometheus.NewDesc("llorch_scrape_collector_success",
			"1 if the collector succeeded during this scrape.", []string{"collector"}, nil),
	}
}

// Describe implements prometheus.Collector. It describes nothing: the
// series vary with the hardware and the sources chosen, so the exporter is
// an unchecked collector.
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	for name, c := range e.collectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.run(name, c, ch)
		}()
	}
	wg.Wait()
}

func (e *Exporter) run(name string, c Collector, ch chan<- prometheus.Metric) {
	begin := time.Now()
	err := c.Update(ch)
	ok := 1.0
	switch {
	case errors.Is(err, ErrNoData):
		e.log.Debug("collector has no data", "collector", name)
	case err != nil:
		ok = 0
		e.log.Warn("collector failed", "collector", name, "err", err)
	}
	ch <- prometheus.MustNewConstMetric(e.duration, prometheus.GaugeValue, time.Since(begin).Seconds(), name)
	ch <- prometheus.MustNewConstMetric(e.success, prometheus.GaugeValue, ok, name)
}
