//go:build e2e

package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace endpoint: it decodes what the
// daemons' exporters send, as a collector or Jaeger would.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	svcs  map[string]bool
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				o.svcs[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (o *otlpReceiver) find(name string) *tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.spans {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			v := a.GetValue()
			if v.GetStringValue() != "" {
				return v.GetStringValue()
			}
			return strings.TrimSpace(strings.TrimPrefix(v.String(), "int_value:"))
		}
	}
	return ""
}

// TestTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, the daemons export
// spans named after route patterns; a task's placement span is a child of
// its POST /v2/tasks span and carries the winner's score components; the
// agent's heartbeats propagate their trace to the control plane.
func TestTraces(t *testing.T) {
	rcv := &otlpReceiver{svcs: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + ln.Addr().String(), "OTEL_BSP_SCHEDULE_DELAY=100"}

	port := freePort(t)
	cpURL := "http://" + addr(port)
	start(t, "orchestratord", "orchestratord", []string{"--cloud-profile", "--addr", addr(port)}, otel...)
	waitHealthy(t, cpURL)
	agentPort := freePort(t)
	start(t, "pool-managerd", "traced", []string{"--cloud-profile", "--addr", addr(agentPort), "--node-id", "traced",
		"--address", "http://" + addr(agentPort), "--orchestratord-url", cpURL, "--runtime-dir", t.TempDir(),
		"--heartbeat-interval", "1s", "--engine", "sim"}, otel...)
	f := &fleet{url: cpURL}
	waitFor(t, 10*time.Second, "pool ready", func() bool {
		code, _, _ := f.submit(t, `{"task_id":"probe-`+time.Now().Format("150405.000")+`","prompt":"x","max_tokens":1}`)
		return code == http.StatusAccepted
	})
	if code, _, body := f.submit(t, `{"task_id":"traced-task","prompt":"Once upon a time","max_tokens":3}`); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	f.events(t, "traced-task")

	// Spans leave in batches: wait for this task's own placement span.
	var placement *tracepb.Span
	waitFor(t, 10*time.Second, "traced-task's placement span, POST /v2/tasks and a heartbeat exported", func() bool {
		rcv.mu.Lock()
		for _, s := range rcv.spans {
			if s.GetName() == "placement" && attr(s, "llorch.task_id") == "traced-task" {
				placement = s
			}
		}
		rcv.mu.Unlock()
		return placement != nil && rcv.find("POST /v2/tasks") != nil && rcv.find("POST /v2/nodes/{id}/heartbeat") != nil
	})
	if !rcv.svcs["orchestratord"] || !rcv.svcs["pool-managerd"] {
		t.Fatalf("services seen: %v", rcv.svcs)
	}
	if len(placement.GetTraceId()) == 0 || len(placement.GetParentSpanId()) == 0 {
		t.Fatal("placement span has no parent")
	}
	for _, key := range []string{"llorch.placed.node_id", "llorch.placed.score", "llorch.placed.score.expected-latency", "llorch.placed.expected_ttft_ms", "llorch.candidates.examined"} {
		if attr(placement, key) == "" {
			t.Errorf("placement span lacks %s", key)
		}
	}
	if attr(placement, "llorch.placed.node_id") != "traced" {
		t.Errorf("placed on %q", attr(placement, "llorch.placed.node_id"))
	}
	// No span is named after a raw path (unbounded cardinality).
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, s := range rcv.spans {
		if strings.Contains(s.GetName(), "traced-task") || strings.HasPrefix(s.GetName(), "/v2/nodes/traced") {
			t.Errorf("span named after a raw path: %q", s.GetName())
		}
	}
}
