package simengine_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/simengine"
)

// BenchmarkSimRequestRate measures non-streaming /completion requests of
// one token over loopback HTTP, many clients at once.
func BenchmarkSimRequestRate(b *testing.B) {
	hs := httptest.NewServer(simengine.New(simengine.Config{
		Parallel: 64, CtxSize: 64 * 64, TokensPerSecond: 1e6, PromptTokensPerSecond: 1e6,
	}).Handler())
	defer hs.Close()
	tr := hs.Client().Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 256 // keep the connections of all the clients
	const body = `{"prompt":"Once upon a time","n_predict":1}`
	var failed atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hs.Client().Post(hs.URL+"/completion", "application/json", strings.NewReader(body))
			if err != nil {
				failed.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "requests/s")
}

// BenchmarkSimStreamingTokens measures one streaming request of 2000
// tokens per op, read by the engine client: tokens delivered per second.
func BenchmarkSimStreamingTokens(b *testing.B) {
	hs := httptest.NewServer(simengine.New(simengine.Config{
		Parallel: 1, CtxSize: 4096, TokensPerSecond: 1e6, PromptTokensPerSecond: 1e6,
	}).Handler())
	defer hs.Close()
	c := engine.New(hs.URL, hs.Client())
	tokens := 0
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		final, err := c.Complete(context.Background(), engine.CompletionRequest{Prompt: "Once upon a time", NPredict: 2000},
			func(engine.CompletionChunk) error { tokens++; return nil }, nil)
		if err != nil || final.TokensPredicted != 2000 {
			b.Fatalf("final %+v: %v", final, err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if tokens != 2000*b.N {
		b.Fatalf("%d tokens delivered, want %d", tokens, 2000*b.N)
	}
	b.ReportMetric(float64(tokens)/elapsed.Seconds(), "tokens/s")
}
