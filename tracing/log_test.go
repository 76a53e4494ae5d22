package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestLogHandlerAddsTheSpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("node_id", "n1")
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))
	for _, tc := range []struct {
		name      string
		log       func()
		wantTrace string
	}{
		{"inside a span", func() { log.InfoContext(ctx, "placed") }, traceID.String()},
		{"a group keeps it at the top", func() { log.WithGroup("g").WarnContext(ctx, "placed", "k", 1) }, traceID.String()},
		{"no span", func() { log.InfoContext(context.Background(), "idle") }, ""},
		{"no context", func() { log.Info("idle") }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.log()
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("%s: %v", buf.String(), err)
			}
			got, _ := rec["trace_id"].(string)
			if rec["node_id"] != "n1" {
				t.Errorf("lost the logger's attributes: %s", buf.String())
			}
			if tc.wantTrace == "" {
				if _, ok := rec["trace_id"]; ok {
					t.Errorf("trace_id without a span: %s", buf.String())
				}
				return
			}
			if got != tc.wantTrace && !bytes.Contains(buf.Bytes(), []byte(tc.wantTrace)) {
				t.Errorf("no trace_id %s in %s", tc.wantTrace, buf.String())
			}
			if !bytes.Contains(buf.Bytes(), []byte(spanID.String())) {
				t.Errorf("no span_id in %s", buf.String())
			}
		})
	}
}
