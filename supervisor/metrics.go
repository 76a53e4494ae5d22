package supervisor

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up, breakerOpen *prometheus.GaugeVec
	restarts        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llorch_engine_up",
			Help: "1 while the pool's supervised engine runs and is announced ready.",
		}, []string{"pool_id"}),
		breakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llorch_engine_breaker_open",
			Help: "1 while the engine's circuit breaker is open after repeated crashes.",
		}, []string{"pool_id"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_engine_restarts_total",
			Help: "Engine failures (crash, failed start, health timeout) that led to a restart.",
		}, []string{"pool_id"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.up, m.breakerOpen, m.restarts} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register engine metrics: %w", err)
			}
		}
	}
	return m, nil
}
