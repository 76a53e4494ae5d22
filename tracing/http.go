package tracing

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// Handler traces a server's requests, naming each span after the matched
// route pattern ("POST /v2/nodes/{id}/heartbeat"), never the raw path, so
// span names stay few.
func Handler(h http.Handler, service string) http.Handler {
	return otelhttp.NewHandler(h, service,
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method + " (unmatched)"
		}),
		// /metrics and /health are scraped constantly; they are not worth
		// a trace.
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/metrics" && r.URL.Path != "/health"
		}),
	)
}

// Transport traces a client's outgoing requests and propagates the trace
// context to the server.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base)
}
