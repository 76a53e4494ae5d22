package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/engine"
)

func FuzzParseMetrics(f *testing.F) {
	for _, name := range []string{"metrics0.txt", "metrics1.txt", "metrics_after_busy.txt"} {
		f.Add(loadRecording(f, name).body)
	}
	f.Add([]byte("llamacpp:requests_processing{a=\"b\"} 3\n"))
	f.Add([]byte("# TYPE x histogram\nx_bucket{le=\"1\"} 1\nx_sum 1\nx_count 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := engine.ParseMetrics(bytes.NewReader(data))
		if err != nil {
			return
		}
		// The named fields are the families' values.
		for name, v := range map[string]float64{
			"llamacpp:prompt_tokens_total":            m.PromptTokensTotal,
			"llamacpp:tokens_predicted_total":         m.TokensPredictedTotal,
			"llamacpp:prompt_seconds_total":           m.PromptSecondsTotal,
			"llamacpp:tokens_predicted_seconds_total": m.PredictedSeconds,
			"llamacpp:requests_processing":            m.RequestsProcessing,
			"llamacpp:requests_deferred":              m.RequestsDeferred,
		} {
			if fv := m.Families[name]; fv != v && (!math.IsNaN(fv) || !math.IsNaN(v)) {
				t.Fatalf("%s: field %v, family %v", name, v, fv)
			}
		}
	})
}

// FuzzCompleteStream serves fuzzed bytes as the body of a 200
// text/event-stream answer over loopback HTTP: Complete must return,
// without panicking, and succeed only with a final chunk. One server serves
// every input; the prompt names the body to send. The seeds are kept small
// (a token chunk of the recording and a short final chunk): the fuzzer
// minimizes each new input, in time that grows with its square.
func FuzzCompleteStream(f *testing.F) {
	rec := loadRecording(f, "completion_stream.txt").body
	tokenChunk, _, _ := bytes.Cut(rec, []byte("\n\n"))
	final := []byte(`data: {"index":0,"content":"","tokens":[],"id_slot":3,"stop":true,"tokens_predicted":4,"timings":{"predicted_n":4}}`)
	f.Add(append(append(append([]byte{}, tokenChunk...), "\n\n"...), append(final, "\n\n"...)...))
	f.Add(tokenChunk)
	f.Add([]byte("data: {\"stop\":true}\n\n"))
	f.Add([]byte("data: {\"error\":{\"code\":500,\"message\":\"x\"}}\n\n"))
	f.Add([]byte(": ping\n\ndata: {\"content\":\"a\"}\r\rdata: {\"stop\":true,\"timings\":{}}\r\n\r\n"))
	f.Add([]byte("data: [DONE]\n\n"))

	var bodies sync.Map // prompt -> body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Prompt string }
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &req)
		body, _ := bodies.Load(req.Prompt)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		b, _ := body.([]byte)
		_, _ = w.Write(b)
	}))
	f.Cleanup(srv.Close)
	c := engine.New(srv.URL, srv.Client())
	var seq atomic.Int64

	f.Fuzz(func(t *testing.T, body []byte) {
		key := strconv.FormatInt(seq.Add(1), 10)
		bodies.Store(key, body)
		defer bodies.Delete(key)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		final, err := c.Complete(ctx, engine.CompletionRequest{Prompt: key}, func(ch engine.CompletionChunk) error {
			if ch.Stop {
				t.Fatal("onChunk got a final chunk")
			}
			return nil
		}, func(string) error { return nil })
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("Complete hung on a finite body")
		}
		if err == nil && !final.Stop {
			t.Fatalf("success without a final chunk: %+v", final)
		}
		// (JSON keys match case-insensitively and may be escaped.)
		if err == nil && !bytes.Contains(bytes.ToLower(body), []byte("stop")) && !bytes.Contains(body, []byte(`\u`)) {
			t.Fatal("success from a body without a stop field")
		}
	})
}

// FuzzLastTimings: whatever the end of an answer holds, the timings parser
// neither panics nor reports timings that the bytes do not contain.
func FuzzLastTimings(f *testing.F) {
	for _, name := range []string{"chat_stream.txt", "chat_nostream.txt", "v1_completions.txt", "completion_stream.txt"} {
		f.Add(loadRecording(f, name).body)
	}
	f.Add([]byte(`"timings":{"predicted_n":`))
	f.Add([]byte(`"timings":"x"`))
	f.Fuzz(func(t *testing.T, tail []byte) {
		tm, ok := engine.LastTimings(tail)
		if !ok && tm != (engine.Timings{}) {
			t.Fatalf("not ok but timings %+v", tm)
		}
		if ok && !bytes.Contains(tail, []byte(`"timings":`)) {
			t.Fatalf("timings %+v from bytes without any", tm)
		}
	})
}
