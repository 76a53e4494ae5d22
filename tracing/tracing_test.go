package tracing

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSetupWithoutEndpointIsNoop(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, shutdown, err := Setup(context.Background(), "svc", "v1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("a span without an endpoint records")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupRejectsUnknownProtocol(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, _, err := Setup(context.Background(), "svc", "v1", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "http/json") {
		t.Fatalf("err = %v", err)
	}
}

func TestSetupRecordsWithEndpoint(t *testing.T) {
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
			tp, shutdown, err := Setup(context.Background(), "svc", "v1", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			_, span := tp.Tracer("t").Start(context.Background(), "x")
			if !span.IsRecording() {
				t.Fatal("span not recording with an endpoint set")
			}
			span.End()
			// Nothing listens there: shutdown may report the failed flush,
			// but must return within its bound.
			_ = shutdown(context.Background())
		})
	}
}

func TestHandlerNamesSpansByRoutePattern(t *testing.T) {
	mux := http.NewServeMux()
	var pattern string
	mux.HandleFunc("POST /v2/nodes/{id}/heartbeat", func(_ http.ResponseWriter, r *http.Request) { pattern = r.Pattern })
	h := Handler(mux, "svc")
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v2/nodes/n-42/heartbeat", nil))
	if pattern != "POST /v2/nodes/{id}/heartbeat" {
		t.Fatalf("pattern = %q", pattern)
	}
}
