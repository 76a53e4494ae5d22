package etcdstore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up          prometheus.GaugeFunc
	pending     prometheus.GaugeFunc
	writes      *prometheus.CounterVec
	writeTime   prometheus.Histogram
	watchEvents prometheus.Counter
}

func newMetrics(s *Store) *metrics {
	return &metrics{
		up: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llorch_registry_etcd_up",
			Help: "1 while etcd answers this control plane's registry (--registry etcd), 0 while it does not: no node is marked offline then."},
			func() float64 { return boolValue(s.Up()) }),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "llorch_registry_etcd_pending_writes",
			Help: "Nodes whose newest change this control plane has not yet written to etcd."},
			func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.pending)) }),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llorch_registry_etcd_writes_total",
			Help: "Batches of node changes written to etcd, by outcome (ok, error)."}, []string{"outcome"}),
		writeTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "llorch_registry_etcd_write_duration_seconds",
			Help:    "Time to write one batch of node changes to etcd.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		watchEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "llorch_registry_etcd_watch_events_total",
			Help: "Changes to the fleet read from etcd's watch (this control plane's own included)."}),
	}
}

func (m *metrics) written(nodes int, d time.Duration, err error) {
	if nodes == 0 {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.writes.WithLabelValues(outcome).Inc()
	m.writeTime.Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	m := s.metrics
	m.up.Describe(ch)
	m.pending.Describe(ch)
	m.writes.Describe(ch)
	m.writeTime.Describe(ch)
	m.watchEvents.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	m := s.metrics
	m.up.Collect(ch)
	m.pending.Collect(ch)
	m.writes.Collect(ch)
	m.writeTime.Collect(ch)
	m.watchEvents.Collect(ch)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
