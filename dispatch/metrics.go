package dispatch

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/admission"
)

// Metrics of admission, placement and dispatch (SPEC §7).
type Metrics struct {
	queueDepthVec *prometheus.GaugeVec
	admissions    *prometheus.CounterVec
	decisions     *prometheus.CounterVec
	placement     prometheus.Histogram
	tasks         *prometheus.CounterVec
	ttft          *prometheus.HistogramVec
	overhead      prometheus.Histogram
	predictionErr *prometheus.HistogramVec
}

// NewMetrics builds the metrics and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queueDepthVec: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llorch_admission_queue_depth", Help: "Tasks waiting for a pool, by priority.",
		}, []string{"priority"}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_admission_total", Help: "Admission decisions: admitted, rejected (queue full), evicted (drop-lru).",
		}, []string{"outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_placement_decisions_total", Help: "Placement outcomes: placed, unavailable (no pool could take the task), deadline.",
		}, []string{"outcome"}),
		placement: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "llorch_placement_duration_seconds", Help: "Time to filter, score and rank the fleet for one task.",
			Buckets: []float64{1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2},
		}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llorch_tasks_total", Help: "Tasks that ended, by outcome: completed, cancelled, worker_reset, engine_error, rejected, evicted, deadline, unavailable, shutdown, error.",
		}, []string{"outcome"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "llorch_task_time_to_first_token_seconds", Help: "From admission to the first token sent to the client.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"node_id", "pool_id"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "llorch_proxy_overhead_seconds", Help: "Time a chunk spends in the control plane: from reading it off the engine to flushing it to the client.",
			Buckets: []float64{1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3},
		}),
		predictionErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llorch_placement_ttft_prediction_error_seconds",
			Help:    "How far the time to first token predicted at admission was from the actual one: direction=late when the token came later than predicted, early when sooner.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"direction"}),
	}
	for _, p := range []admission.Priority{admission.Interactive, admission.Batch} {
		m.queueDepthVec.WithLabelValues(p.String())
	}
	for _, o := range []string{"placed", "unavailable", "deadline"} {
		m.decisions.WithLabelValues(o)
	}
	for _, d := range []string{"late", "early"} {
		m.predictionErr.WithLabelValues(d)
	}
	// Every outcome's series exists from the start, so the first burst of
	// rejections is an increase from 0 rather than a series appearing.
	for _, o := range []string{"admitted", "rejected", "evicted"} {
		m.admissions.WithLabelValues(o)
	}
	for _, o := range []string{"completed", "cancelled", "worker_reset", "engine_error", "rejected", "evicted", "deadline", "unavailable", "shutdown", "error"} {
		m.tasks.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.queueDepthVec, m.admissions, m.decisions, m.placement, m.tasks, m.ttft, m.overhead, m.predictionErr)
	}
	return m
}

func (m *Metrics) queueDepth(q *admission.Queue) {
	m.queueDepthVec.WithLabelValues("interactive").Set(float64(q.Len(admission.Interactive)))
	m.queueDepthVec.WithLabelValues("batch").Set(float64(q.Len(admission.Batch)))
}

func (m *Metrics) admission(outcome string) { m.admissions.WithLabelValues(outcome).Inc() }
func (m *Metrics) decision(outcome string)  { m.decisions.WithLabelValues(outcome).Inc() }
func (m *Metrics) placementLatency(d time.Duration, sc trace.SpanContext) {
	observe(m.placement, d.Seconds(), sc)
}

// observe records v, with the trace as an exemplar when it is sampled: a
// point on a latency graph then opens its trace.
func observe(o prometheus.Observer, v float64, sc trace.SpanContext) {
	if sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()})
			return
		}
	}
	o.Observe(v)
}

// poolDescs describe the dispatcher's books, per pool.
var (
	poolInFlightDesc = prometheus.NewDesc("llorch_placement_pool_in_flight",
		"Tasks this control plane has sent to the pool and not yet seen end (exact, not a report).", []string{"node_id", "pool_id"}, nil)
	poolForeignDesc = prometheus.NewDesc("llorch_placement_pool_foreign_load",
		"Load the pool's engines reported beyond this control plane's tasks (another client or replica), while it is counted.", []string{"node_id", "pool_id"}, nil)
	poolDecodeDesc = prometheus.NewDesc("llorch_placement_pool_decode_tokens_per_second",
		"One slot's generation speed learned from the pool's completed tasks.", []string{"node_id", "pool_id"}, nil)
	affinitiesDesc = prometheus.NewDesc("llorch_placement_session_affinities",
		"Sessions whose last pool placement remembers (bounded by size and age).", nil, nil)
	poolServiceDesc = prometheus.NewDesc("llorch_placement_pool_service_seconds",
		"How long a task holds one of the pool's slots, learned from its completed tasks.", []string{"node_id", "pool_id"}, nil)
)

var _ prometheus.Collector = (*Dispatcher)(nil)

// Describe implements prometheus.Collector: the books, per pool.
func (d *Dispatcher) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{poolInFlightDesc, poolForeignDesc, poolDecodeDesc, poolServiceDesc, affinitiesDesc} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector. The books are per candidate
// (a pool's replicas each have theirs); the series are per pool: counts
// summed over its replicas, speeds their mean weighted by the tasks each
// learned from. Speeds are left out of pools never measured.
func (d *Dispatcher) Collect(ch chan<- prometheus.Metric) {
	now := d.now()
	d.mu.Lock()
	ch <- prometheus.MustNewConstMetric(affinitiesDesc, prometheus.GaugeValue, float64(d.affinity.len()))
	type poolSum struct {
		inflight, foreign int
		decode, decodeN   float64
		service, serviceN float64
	}
	pools := make(map[[2]string]*poolSum, len(d.books))
	for key, b := range d.books {
		// Keys are node/pool or node/pool/replica; ids hold no '/'.
		node, rest, _ := strings.Cut(key, "/")
		pool, _, _ := strings.Cut(rest, "/")
		ps, ok := pools[[2]string{node, pool}]
		if !ok {
			ps = &poolSum{}
			pools[[2]string{node, pool}] = ps
		}
		ps.inflight += b.inflight
		if now.Before(b.foreignUntil) {
			ps.foreign += b.foreign
		}
		if b.speed.samples == 0 {
			continue
		}
		s, n := b.speed.speed(), float64(b.speed.samples)
		if s.DecodeTPS > 0 {
			ps.decode, ps.decodeN = ps.decode+n*s.DecodeTPS, ps.decodeN+n
		}
		ps.service, ps.serviceN = ps.service+n*s.Service.Seconds(), ps.serviceN+n
	}
	d.mu.Unlock()
	for k, ps := range pools {
		node, pool := k[0], k[1]
		ch <- prometheus.MustNewConstMetric(poolInFlightDesc, prometheus.GaugeValue, float64(ps.inflight), node, pool)
		ch <- prometheus.MustNewConstMetric(poolForeignDesc, prometheus.GaugeValue, float64(ps.foreign), node, pool)
		if ps.decodeN > 0 {
			ch <- prometheus.MustNewConstMetric(poolDecodeDesc, prometheus.GaugeValue, ps.decode/ps.decodeN, node, pool)
		}
		if ps.serviceN > 0 {
			ch <- prometheus.MustNewConstMetric(poolServiceDesc, prometheus.GaugeValue, ps.service/ps.serviceN, node, pool)
		}
	}
}

// TaskEnded counts a finished task.
func (m *Metrics) TaskEnded(outcome string) { m.tasks.WithLabelValues(outcome).Inc() }

// FirstToken records a task's time to first token on a pool (with its
// trace as exemplar), and how far it was from the prediction made at
// admission (0: none was made).
func (m *Metrics) FirstToken(node, pool string, actual, predicted time.Duration, sc trace.SpanContext) {
	observe(m.ttft.WithLabelValues(node, pool), actual.Seconds(), sc)
	if predicted <= 0 {
		return
	}
	if diff := actual - predicted; diff >= 0 {
		m.predictionErr.WithLabelValues("late").Observe(diff.Seconds())
	} else {
		m.predictionErr.WithLabelValues("early").Observe(-diff.Seconds())
	}
}

// ProxyOverhead records one chunk's time in the control plane.
func (m *Metrics) ProxyOverhead(d time.Duration, sc trace.SpanContext) {
	observe(m.overhead, d.Seconds(), sc)
}
