package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	heartbeats, registrations *prometheus.CounterVec
	registered                prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_heartbeat_sent_total",
			Help: "Heartbeats sent to the control plane, by outcome (ok, error, unknown_node).",
		}, []string{"outcome"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_agent_registrations_total",
			Help: "Registration attempts with the control plane, by outcome (ok, error).",
		}, []string{"outcome"}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llorch_agent_registered",
			Help: "1 while the control plane holds this node's registration.",
		}),
	}
	for _, o := range []string{"ok", "error", "unknown_node"} {
		m.heartbeats.WithLabelValues(o)
	}
	for _, o := range []string{"ok", "error"} {
		m.registrations.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.heartbeats, m.registrations, m.registered} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register agent metrics: %w", err)
			}
		}
	}
	return m, nil
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
