package dispatch

import (
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler/schedtest"
)

func TestPlacementSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	h := newHarness(t, newFleet(schedtest.Pool("pool-a").Slots(2, 2).Obj(), schedtest.Pool("pool-b").Obj()),
		func(o *Options) { o.Tracer = tp.Tracer("test") })

	ctx, parent := tp.Tracer("test").Start(t.Context(), "request")
	traced := NewJob("traced", interactive, auto(""), time.Now().Add(time.Hour))
	traced.Trace = trace.SpanContextFromContext(ctx)
	if _, _, e := h.d.Submit(traced); e != nil {
		t.Fatal(e)
	}
	h.submit(t, "untraced", interactive, auto(""))
	h.d.pass()
	parent.End()

	var placement []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "placement" {
			placement = append(placement, s)
		}
	}
	if len(placement) != 1 {
		t.Fatalf("%d placement spans, want 1 (the untraced job records none)", len(placement))
	}
	s := placement[0]
	if s.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("the placement span is not a child of the request's")
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes() {
		attrs[a.Key] = a.Value
	}
	if attrs["llorch.task_id"].AsString() != "traced" || attrs["llorch.placed.pool_id"].AsString() != "pool-a" ||
		attrs["llorch.runner_up"].AsString() != "n1/pool-b" || attrs["llorch.candidates.feasible"].AsInt64() != 2 {
		t.Errorf("attributes %v", attrs)
	}
	if _, ok := attrs["llorch.placed.score.expected-latency"]; !ok {
		t.Errorf("no score components in %v", attrs)
	}
	if attrs["llorch.placed.expected_latency_ms"].AsFloat64() <= 0 || attrs["llorch.placed.speed_source"].AsString() != "prior" {
		t.Errorf("no expected latency in %v", attrs)
	}
	if len(h.d.Scorers()) == 0 {
		t.Error("no scorers")
	}
}

func TestStatusAndOutcomeOfCodes(t *testing.T) {
	for code, want := range map[string]int{
		api.CodeInvalidParams: 400, api.CodeDeadlineUnmet: 400,
		api.CodeAdmissionReject: 429, api.CodeQueueFullDropLRU: 429,
		api.CodePoolUnavailable: 503, api.CodeNodeUnavailable: 503, api.CodeModelNotAvailable: 503, api.CodeWorkerReset: 503,
		api.CodeInternal: 500, "SOMETHING_NEW": 500,
	} {
		if got := StatusOf(code); got != want {
			t.Errorf("StatusOf(%s) = %d, want %d", code, got, want)
		}
	}
	for code, want := range map[string]string{
		api.CodeQueueFullDropLRU: "evicted", api.CodeDeadlineUnmet: "deadline",
		api.CodeModelNotAvailable: "unavailable", api.CodePoolUnavailable: "unavailable", api.CodeNodeUnavailable: "unavailable",
		api.CodeInternal: "error",
	} {
		if got := outcomeOf(code); got != want {
			t.Errorf("outcomeOf(%s) = %s, want %s", code, got, want)
		}
	}
}

// A sampled trace rides along as an exemplar of the latency histograms; an
// unsampled or absent one does not.
func TestLatencyExemplars(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID})
	m.FirstToken("n1", "pool-0", 30*time.Millisecond, 20*time.Millisecond, sampled)
	m.FirstToken("n1", "pool-1", 30*time.Millisecond, 20*time.Millisecond, unsampled)
	m.ProxyOverhead(20*time.Microsecond, sampled)
	m.placementLatency(40*time.Microsecond, trace.SpanContext{})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exemplars := map[string]string{} // series -> trace id
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			name := f.GetName()
			for _, l := range mt.GetLabel() {
				if l.GetName() == "pool_id" {
					name += "/" + l.GetValue()
				}
			}
			for _, b := range mt.GetHistogram().GetBucket() {
				if ex := b.GetExemplar(); ex != nil {
					for _, l := range ex.GetLabel() {
						if l.GetName() == "trace_id" {
							exemplars[name] = l.GetValue()
						}
					}
				}
			}
		}
	}
	want := map[string]string{
		"llorch_task_time_to_first_token_seconds/pool-0": traceID.String(),
		"llorch_proxy_overhead_seconds":                  traceID.String(),
	}
	if !maps.Equal(exemplars, want) {
		t.Errorf("exemplars %v, want %v", exemplars, want)
	}
}
