package registry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/api"
)

// Outcomes of llorch_node_registrations_total and llorch_node_heartbeats_total.
const (
	OutcomeOK          = "ok"
	OutcomeInvalid     = "invalid"
	OutcomeUnknownNode = "unknown_node"
)

type metrics struct {
	registrations struct{ ok, invalid prometheus.Counter }
	heartbeats    struct{ ok, invalid, unknown prometheus.Counter }
	registrationsVec,
	heartbeatsVec,
	transitions *prometheus.CounterVec

	nodesDesc, ageDesc, poolsDesc, statusDesc, intervalDesc, timeoutDesc *prometheus.Desc
}

func newMetrics() *metrics {
	m := &metrics{
		registrationsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_node_registrations_total",
			Help: "Node registrations received, by outcome.",
		}, []string{"outcome"}),
		heartbeatsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_node_heartbeats_total",
			Help: "Node heartbeats received, by outcome.",
		}, []string{"outcome"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_node_status_transitions_total",
			Help: "Node status changes; from=none is a first registration, to=deregistered a removal.",
		}, []string{"from", "to"}),
		nodesDesc: prometheus.NewDesc("llorch_nodes",
			"Registered nodes by status.", []string{"status"}, nil),
		ageDesc: prometheus.NewDesc("llorch_node_heartbeat_age_seconds",
			"Seconds since the node's last heartbeat (or registration).", []string{"node_id"}, nil),
		poolsDesc: prometheus.NewDesc("llorch_pools_available",
			"Pools that can take work: ready, not draining, on an online node.", nil, nil),
		statusDesc: prometheus.NewDesc("llorch_node_status",
			"1 for the node's status as the control plane sees it (online, draining, offline), 0 for the others.", []string{"node_id", "status"}, nil),
		intervalDesc: prometheus.NewDesc("llorch_node_heartbeat_interval_seconds",
			"The node's heartbeat interval as observed: a moving average of the gaps between its heartbeats.", []string{"node_id"}, nil),
		timeoutDesc: prometheus.NewDesc("llorch_node_timeout_seconds",
			"How long a node may go without a heartbeat before it is offline (--node-timeout).", nil, nil),
	}
	// Resolve the hot-path children once so a heartbeat does no label lookup.
	m.registrations.ok = m.registrationsVec.WithLabelValues(OutcomeOK)
	m.registrations.invalid = m.registrationsVec.WithLabelValues(OutcomeInvalid)
	m.heartbeats.ok = m.heartbeatsVec.WithLabelValues(OutcomeOK)
	m.heartbeats.invalid = m.heartbeatsVec.WithLabelValues(OutcomeInvalid)
	m.heartbeats.unknown = m.heartbeatsVec.WithLabelValues(OutcomeUnknownNode)
	return m
}

func (m *metrics) transition(from, to string) {
	m.transitions.WithLabelValues(from, to).Inc()
}

// RejectRegistration counts a registration refused before it reached the
// registry (malformed body, invalid fields).
func (r *Registry) RejectRegistration() { r.metrics.registrations.invalid.Inc() }

// RejectHeartbeat counts a heartbeat refused before it reached the registry.
func (r *Registry) RejectHeartbeat() { r.metrics.heartbeats.invalid.Inc() }

var _ prometheus.Collector = (*Registry)(nil)

// Describe implements prometheus.Collector.
func (r *Registry) Describe(ch chan<- *prometheus.Desc) {
	r.metrics.registrationsVec.Describe(ch)
	r.metrics.heartbeatsVec.Describe(ch)
	r.metrics.transitions.Describe(ch)
	ch <- r.metrics.nodesDesc
	ch <- r.metrics.ageDesc
	ch <- r.metrics.poolsDesc
	ch <- r.metrics.statusDesc
	ch <- r.metrics.intervalDesc
	ch <- r.metrics.timeoutDesc
}

// Collect implements prometheus.Collector. Gauges are computed from the node
// map at scrape time, so they can never drift from the registry.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	m := r.metrics
	m.registrationsVec.Collect(ch)
	m.heartbeatsVec.Collect(ch)
	m.transitions.Collect(ch)

	now := r.clock.Now()
	counts := map[string]int{api.StatusOnline: 0, api.StatusDraining: 0, api.StatusOffline: 0}
	pools := 0
	r.mu.RLock()
	for id, n := range r.nodes {
		counts[n.status]++
		ch <- prometheus.MustNewConstMetric(m.ageDesc, prometheus.GaugeValue, now.Sub(n.lastHeartbeat).Seconds(), id)
		for _, st := range statuses {
			ch <- prometheus.MustNewConstMetric(m.statusDesc, prometheus.GaugeValue, boolValue(n.status == st), id, st)
		}
		if n.interval > 0 {
			ch <- prometheus.MustNewConstMetric(m.intervalDesc, prometheus.GaugeValue, n.interval.Seconds(), id)
		}
		if n.status != api.StatusOnline {
			continue
		}
		for i := range n.pools {
			if n.pools[i].Ready && !n.pools[i].Draining {
				pools++
			}
		}
	}
	r.mu.RUnlock()
	for status, c := range counts {
		ch <- prometheus.MustNewConstMetric(m.nodesDesc, prometheus.GaugeValue, float64(c), status)
	}
	ch <- prometheus.MustNewConstMetric(m.poolsDesc, prometheus.GaugeValue, float64(pools))
	ch <- prometheus.MustNewConstMetric(m.timeoutDesc, prometheus.GaugeValue, r.timeout.Seconds())
}

// statuses are the values of llorch_node_status's status label.
var statuses = []string{api.StatusOnline, api.StatusDraining, api.StatusOffline}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
