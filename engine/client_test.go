package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llorch/llorch/engine"
)

// seenRequest is what a replay server saw of the client's request.
type seenRequest struct {
	method, path string
	header       http.Header
	close        bool // the client asked for Connection: close
	body         []byte
}

// replay serves rec for every request: its status, its Content-Type and
// its body; an event stream is written event by event, flushed.
type replay struct {
	rec  recording
	mu   sync.Mutex
	seen []seenRequest
}

func (p *replay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.seen = append(p.seen, seenRequest{r.Method, r.URL.Path, r.Header.Clone(), r.Close, body})
	p.mu.Unlock()
	w.Header().Set("Content-Type", p.rec.header.Get("Content-Type"))
	w.WriteHeader(p.rec.status)
	if p.rec.header.Get("Content-Type") != "text/event-stream" {
		_, _ = w.Write(p.rec.body)
		return
	}
	f := w.(http.Flusher)
	for _, ev := range bytes.SplitAfter(p.rec.body, []byte("\n\n")) {
		if _, err := w.Write(ev); err != nil {
			return
		}
		f.Flush()
	}
}

func (p *replay) requests() []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seenRequest(nil), p.seen...)
}

// serveRecording starts a server replaying rec and returns a client of it.
func serveRecording(t *testing.T, rec recording) (*engine.Client, *replay) {
	t.Helper()
	p := &replay{rec: rec}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return engine.New(srv.URL+"/", srv.Client()), p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkStreamRequest checks what a streaming call sent.
func checkStreamRequest(t *testing.T, p *replay, path string) map[string]any {
	t.Helper()
	reqs := p.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != path {
		t.Errorf("request %s %s, want POST %s", r.method, r.path, path)
	}
	if got := r.header.Get("Accept"); got != "text/event-stream" {
		t.Errorf("Accept = %q, want text/event-stream", got)
	}
	if !r.close {
		t.Error("streaming request does not ask for Connection: close; llama-server closes it after the stream")
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("request body %q: %v", r.body, err)
	}
	if body["stream"] != true {
		t.Errorf("request body stream = %v, want true", body["stream"])
	}
	return body
}

func checkGet(t *testing.T, p *replay, path string) {
	t.Helper()
	reqs := p.requests()
	if len(reqs) != 1 || reqs[0].method != http.MethodGet || reqs[0].path != path {
		t.Errorf("requests %+v, want one GET %s", reqs, path)
	}
}

func intp(i int) *int { return &i }

// TestReplayEveryRecording sends every recorded llama-server response
// through the client call that reads it.
func TestReplayEveryRecording(t *testing.T) {
	wantMetrics := func(want engine.Metrics, families int, extra map[string]float64) func(*testing.T, *engine.Client, *replay) {
		return func(t *testing.T, c *engine.Client, p *replay) {
			m, err := c.Metrics(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			checkGet(t, p, "/metrics")
			got := [6]float64{m.PromptTokensTotal, m.TokensPredictedTotal, m.PromptSecondsTotal, m.PredictedSeconds, m.RequestsProcessing, m.RequestsDeferred}
			exp := [6]float64{want.PromptTokensTotal, want.TokensPredictedTotal, want.PromptSecondsTotal, want.PredictedSeconds, want.RequestsProcessing, want.RequestsDeferred}
			if got != exp {
				t.Errorf("prompt tokens, predicted tokens, prompt s, predicted s, processing, deferred = %v, want %v", got, exp)
			}
			if len(m.Families) != families {
				t.Errorf("%d families, want %d: %v", len(m.Families), families, m.Families)
			}
			for k, v := range extra {
				if m.Families[k] != v {
					t.Errorf("%s = %v, want %v", k, m.Families[k], v)
				}
			}
		}
	}
	// A JSON answer to a streaming request is not a finished stream.
	notAStream := func(t *testing.T, c *engine.Client, _ *replay) {
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error {
			t.Error("onChunk called for a JSON body")
			return nil
		}, nil)
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Errorf("Complete of a JSON body: %v, want ErrStreamTruncated", err)
		}
	}
	cases := map[string]func(*testing.T, *engine.Client, *replay){
		"health.txt": func(t *testing.T, c *engine.Client, p *replay) {
			h, err := c.Health(ctxT(t))
			if err != nil || h != (engine.Health{Ready: true}) {
				t.Errorf("Health = %+v, %v; want ready", h, err)
			}
			checkGet(t, p, "/health")
		},
		"health_loading.txt": func(t *testing.T, c *engine.Client, _ *replay) {
			h, err := c.Health(ctxT(t))
			if err != nil || h != (engine.Health{Message: "Loading model"}) {
				t.Errorf("Health = %+v, %v; want not ready, Loading model, no error", h, err)
			}
		},
		"slots.txt": func(t *testing.T, c *engine.Client, p *replay) {
			s, err := c.Slots(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			checkGet(t, p, "/slots")
			if len(s) != 4 {
				t.Fatalf("%d slots, want 4", len(s))
			}
			for i, sl := range s {
				if sl != (engine.Slot{ID: i, NCtx: 256}) {
					t.Errorf("slot %d = %+v", i, sl)
				}
			}
		},
		"slots_after.txt": func(t *testing.T, c *engine.Client, _ *replay) {
			s, err := c.Slots(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			want := []*int{nil, nil, intp(53), intp(67)}
			if len(s) != len(want) {
				t.Fatalf("%d slots, want 4", len(s))
			}
			for i, sl := range s {
				if sl.ID != i || sl.NCtx != 256 || sl.IsProcessing || sl.Speculative {
					t.Errorf("slot %d = %+v", i, sl)
				}
				switch {
				case want[i] == nil && sl.IDTask != nil:
					t.Errorf("slot %d id_task = %d, want none", i, *sl.IDTask)
				case want[i] != nil && (sl.IDTask == nil || *sl.IDTask != *want[i]):
					t.Errorf("slot %d id_task = %v, want %d", i, sl.IDTask, *want[i])
				}
			}
		},
		"props.txt": func(t *testing.T, c *engine.Client, p *replay) {
			pr, err := c.Props(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			checkGet(t, p, "/props")
			if pr.TotalSlots != 4 || pr.DefaultGenerationSettings.NCtx != 256 || pr.BuildInfo != "b0-unknown" ||
				pr.ModelAlias != "model.gguf" || pr.ModelPath != "model.gguf" {
				t.Errorf("props = %+v", pr)
			}
		},
		"metrics0.txt": wantMetrics(engine.Metrics{}, 15, map[string]float64{"llamacpp:n_busy_slots_per_decode": 0}),
		"metrics1.txt": wantMetrics(engine.Metrics{
			PromptTokensTotal: 59, TokensPredictedTotal: 68, PromptSecondsTotal: 0.006597, PredictedSeconds: 0.014729,
		}, 15, map[string]float64{
			"llamacpp:prompt_tokens_cached_total": 61, "llamacpp:n_decode_total": 68, "llamacpp:n_tokens_max": 65,
			"llamacpp:prompt_tokens_seconds": 8943.46, "llamacpp:predicted_tokens_seconds": 4209.38,
			"llamacpp:n_busy_slots_per_decode": 1,
		}),
		"metrics_after_busy.txt": wantMetrics(engine.Metrics{
			PromptTokensTotal: 86, TokensPredictedTotal: 1868, PromptSecondsTotal: 0.011749, PredictedSeconds: 1.08446,
		}, 15, map[string]float64{
			"llamacpp:n_decode_total": 669, "llamacpp:n_tokens_max": 206, "llamacpp:n_busy_slots_per_decode": 2.79223,
			"llamacpp:predicted_tokens_seconds": 0,
		}),
		"completion_stream.txt": func(t *testing.T, c *engine.Client, p *replay) {
			var contents []string
			final, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "Once upon a time", NPredict: 4},
				func(ch engine.CompletionChunk) error {
					if ch.Stop {
						t.Error("onChunk got the final chunk")
					}
					if ch.TokensPredicted != len(contents)+1 || len(ch.Tokens) != 1 || ch.IDSlot != -1 {
						t.Errorf("chunk %d = %+v", len(contents), ch)
					}
					contents = append(contents, ch.Content)
					return nil
				}, func(string) error { t.Error("ping in a stream without comments"); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{",", " there", " was", " a"}; strings.Join(contents, "|") != strings.Join(want, "|") {
				t.Errorf("chunks %q, want %q", contents, want)
			}
			if !final.Stop || final.Content != "" || final.IDSlot != 3 || final.TokensPredicted != 4 ||
				final.TokensEvaluated != 5 || final.StopType != "limit" || final.Model != "model.gguf" {
				t.Errorf("final chunk = %+v", final)
			}
			if final.Timings == nil || final.Timings.PredictedN != 4 || final.Timings.PromptN != 1 ||
				final.Timings.CacheN != 4 || final.Timings.PredictedMS != 0.581 {
				t.Errorf("final timings = %+v", final.Timings)
			}
			body := checkStreamRequest(t, p, "/completion")
			if body["prompt"] != "Once upon a time" || body["n_predict"] != 4.0 {
				t.Errorf("request body = %v", body)
			}
		},
		"chat_stream.txt": func(t *testing.T, c *engine.Client, p *replay) {
			in := map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "stream": false, "max_tokens": 8}
			var chunks []engine.ChatChunk
			var text strings.Builder
			err := c.ChatStream(ctxT(t), in, func(raw []byte, ch engine.ChatChunk) error {
				if !json.Valid(raw) || !bytes.HasPrefix(raw, []byte(`{"choices":`)) {
					t.Errorf("raw chunk %q", raw)
				}
				chunks = append(chunks, ch)
				for _, c := range ch.Choices {
					if c.Delta.Content != nil {
						text.WriteString(*c.Delta.Content)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if in["stream"] != false {
				t.Error("ChatStream changed the caller's body")
			}
			body := checkStreamRequest(t, p, "/v1/chat/completions")
			if body["max_tokens"] != 8.0 || body["messages"] == nil {
				t.Errorf("request body = %v", body)
			}
			// role chunk, 8 content chunks, finish chunk, usage chunk; [DONE] ends the stream.
			if len(chunks) != 11 {
				t.Fatalf("%d chunks, want 11", len(chunks))
			}
			first := chunks[0]
			if first.Object != "chat.completion.chunk" || first.Model != "model.gguf" || first.ID != "chatcmpl-Vz2xpUECPwc2uVNbh7A0iQgkyrzgV1L6" ||
				len(first.Choices) != 1 || first.Choices[0].Delta.Role != "assistant" || first.Choices[0].Delta.Content != nil {
				t.Errorf("first chunk = %+v", first)
			}
			if text.String() != `"Thank you!"` {
				t.Errorf("content %q", text.String())
			}
			fin := chunks[9].Choices
			if len(fin) != 1 || fin[0].FinishReason == nil || *fin[0].FinishReason != "length" {
				t.Errorf("finish chunk = %+v", chunks[9])
			}
			last := chunks[10]
			if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != 8 || last.Usage.PromptTokens != 50 ||
				last.Usage.TotalTokens != 58 || last.Timings == nil || last.Timings.PredictedN != 8 {
				t.Errorf("usage chunk = %+v", last)
			}
		},
		// The client has no non-streaming completion call; the non-streamed
		// answer has the final chunk's shape, so it must decode as one.
		"completion.txt": func(t *testing.T, c *engine.Client, p *replay) {
			var ch engine.CompletionChunk
			if err := json.Unmarshal(p.rec.body, &ch); err != nil {
				t.Fatal(err)
			}
			if !ch.Stop || ch.TokensPredicted != 16 || ch.Timings == nil || ch.Timings.PredictedN != 16 {
				t.Errorf("decoded %+v", ch)
			}
			notAStream(t, c, p)
		},
		"completion_t0.txt": func(t *testing.T, c *engine.Client, p *replay) {
			var ch engine.CompletionChunk
			if err := json.Unmarshal(p.rec.body, &ch); err != nil || !ch.Stop || ch.Timings == nil {
				t.Errorf("decoded %+v, %v", ch, err)
			}
			notAStream(t, c, p)
		},
		"chat_nostream.txt": func(t *testing.T, c *engine.Client, p *replay) {
			err := c.ChatStream(ctxT(t), map[string]any{}, func([]byte, engine.ChatChunk) error { return nil })
			if !errors.Is(err, engine.ErrStreamTruncated) {
				t.Errorf("ChatStream of a JSON body: %v, want ErrStreamTruncated", err)
			}
		},
		"v1_completions.txt": notAStream,
		// No client call reads these; they must at least not pass for a
		// stream.
		"models.txt":   notAStream,
		"tokenize.txt": notAStream,
	}
	for _, name := range httpRecordings(t) {
		check, ok := cases[name]
		if !ok {
			t.Errorf("recording %s is not replayed by any test", name)
			continue
		}
		delete(cases, name)
		t.Run(name, func(t *testing.T) {
			c, p := serveRecording(t, loadRecording(t, name))
			check(t, c, p)
		})
	}
	for name := range cases {
		t.Errorf("recording %s is missing from the fixtures", name)
	}
}

// The recordings never show a busy engine; the gauges must still map.
func TestMetricsBusyGauges(t *testing.T) {
	rec := loadRecording(t, "metrics1.txt")
	rec.body = bytes.Replace(rec.body, []byte("llamacpp:requests_processing 0"), []byte("llamacpp:requests_processing 4"), 1)
	rec.body = bytes.Replace(rec.body, []byte("llamacpp:requests_deferred 0"), []byte("llamacpp:requests_deferred 3"), 1)
	c, _ := serveRecording(t, rec)
	m, err := c.Metrics(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.RequestsProcessing != 4 || m.RequestsDeferred != 3 {
		t.Errorf("processing %v deferred %v, want 4 and 3", m.RequestsProcessing, m.RequestsDeferred)
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := engine.ParseMetrics(strings.NewReader("llamacpp:x one\n")); err == nil {
		t.Error("a non-numeric sample parsed")
	}
}

// truncated returns the completion stream cut at cut (an index into its body).
func truncatedStream(t *testing.T, name string, cut func([]byte) int) recording {
	rec := loadRecording(t, name)
	rec.body = rec.body[:cut(rec.body)]
	return rec
}

func TestStreamTruncated(t *testing.T) {
	beforeLast := func(marker string) func([]byte) int {
		return func(b []byte) int { return bytes.LastIndex(b, []byte(marker)) }
	}
	t.Run("completion before the final chunk", func(t *testing.T) {
		c, _ := serveRecording(t, truncatedStream(t, "completion_stream.txt", beforeLast("data: ")))
		n := 0
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { n++; return nil }, nil)
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Fatalf("err = %v, want ErrStreamTruncated", err)
		}
		if n != 4 {
			t.Errorf("%d chunks before the cut, want 4", n)
		}
	})
	t.Run("completion inside the final chunk", func(t *testing.T) {
		c, _ := serveRecording(t, truncatedStream(t, "completion_stream.txt", func(b []byte) int { return len(b) - 40 }))
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil }, nil)
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Fatalf("err = %v, want ErrStreamTruncated", err)
		}
	})
	t.Run("completion final chunk without its blank line", func(t *testing.T) {
		c, _ := serveRecording(t, truncatedStream(t, "completion_stream.txt", func(b []byte) int { return len(b) - 1 }))
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil }, nil)
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Fatalf("err = %v, want ErrStreamTruncated", err)
		}
	})
	t.Run("chat before [DONE]", func(t *testing.T) {
		c, _ := serveRecording(t, truncatedStream(t, "chat_stream.txt", beforeLast("data: [DONE]")))
		n := 0
		err := c.ChatStream(ctxT(t), map[string]any{}, func([]byte, engine.ChatChunk) error { n++; return nil })
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Fatalf("err = %v, want ErrStreamTruncated", err)
		}
		if n != 11 {
			t.Errorf("%d chunks, want 11", n)
		}
	})
	t.Run("connection dropped mid-stream", func(t *testing.T) {
		rec := loadRecording(t, "completion_stream.txt")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			first, _, _ := bytes.Cut(rec.body, []byte("\n\n"))
			_, _ = w.Write(append(first, "\n\n"...))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // abort: the chunked body never ends
		}))
		defer srv.Close()
		c := engine.New(srv.URL, srv.Client())
		n := 0
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { n++; return nil }, nil)
		if !errors.Is(err, engine.ErrStreamTruncated) {
			t.Fatalf("err = %v, want ErrStreamTruncated", err)
		}
		if n != 1 {
			t.Errorf("%d chunks, want 1", n)
		}
	})
}

func TestErrorBodies(t *testing.T) {
	exceed := recording{
		status: http.StatusBadRequest,
		header: http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		body:   []byte(`{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":300,"n_ctx":256}}`),
	}
	wantExceed := func(t *testing.T, err error) {
		t.Helper()
		var se *engine.StatusError
		if !errors.As(err, &se) {
			t.Fatalf("err = %v (%T), want *StatusError", err, err)
		}
		if se.StatusCode != 400 || se.Type != "exceed_context_size_error" || !strings.HasPrefix(se.Message, "the request exceeds") {
			t.Errorf("StatusError = %+v", se)
		}
		if !strings.Contains(se.Error(), "exceed_context_size_error") {
			t.Errorf("Error() = %q", se.Error())
		}
	}
	t.Run("Complete", func(t *testing.T) {
		c, _ := serveRecording(t, exceed)
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error {
			t.Error("onChunk called")
			return nil
		}, nil)
		wantExceed(t, err)
	})
	t.Run("ChatStream", func(t *testing.T) {
		c, _ := serveRecording(t, exceed)
		wantExceed(t, c.ChatStream(ctxT(t), map[string]any{}, func([]byte, engine.ChatChunk) error { return nil }))
	})
	t.Run("Slots not supported", func(t *testing.T) {
		c, _ := serveRecording(t, recording{
			status: http.StatusNotImplemented,
			header: http.Header{"Content-Type": {"application/json; charset=utf-8"}},
			body:   []byte(`{"error":{"code":501,"message":"This server does not support slots endpoint.","type":"not_supported_error"}}`),
		})
		_, err := c.Slots(ctxT(t))
		var se *engine.StatusError
		if !errors.As(err, &se) || se.StatusCode != 501 || se.Type != "not_supported_error" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("Health 500 without a body", func(t *testing.T) {
		c, _ := serveRecording(t, recording{status: 500, header: http.Header{}})
		_, err := c.Health(ctxT(t))
		var se *engine.StatusError
		if !errors.As(err, &se) || se.StatusCode != 500 || se.Error() != "engine answered 500" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("Props not JSON", func(t *testing.T) {
		c, _ := serveRecording(t, recording{status: 200, header: http.Header{"Content-Type": {"text/html"}}, body: []byte("<html>")})
		if _, err := c.Props(ctxT(t)); err == nil {
			t.Error("an HTML body decoded as props")
		}
	})
	// Once a stream has started with 200, llama-server reports an error as
	// an event of its own.
	inStream := func(tail string) recording {
		rec := loadRecording(t, "completion_stream.txt")
		first, _, _ := bytes.Cut(rec.body, []byte("\n\n"))
		rec.body = append(append(first, "\n\n"...), tail...)
		return rec
	}
	t.Run("error event in a completion stream", func(t *testing.T) {
		c, _ := serveRecording(t, inStream(`data: {"error":{"code":500,"message":"slot died","type":"server_error"}}`+"\n\n"))
		n := 0
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { n++; return nil }, nil)
		var se *engine.StatusError
		if !errors.As(err, &se) || se.StatusCode != 500 || se.Type != "server_error" || se.Message != "slot died" {
			t.Fatalf("err = %v, want the stream's error", err)
		}
		if n != 1 {
			t.Errorf("onChunk called %d times, want 1 (not for the error)", n)
		}
	})
	t.Run("error event in a chat stream", func(t *testing.T) {
		rec := loadRecording(t, "chat_stream.txt")
		first, _, _ := bytes.Cut(rec.body, []byte("\n\n"))
		rec.body = append(append(first, "\n\n"...), `data: {"error":{"code":400,"message":"bad","type":"invalid_request_error"}}`+"\n\ndata: [DONE]\n\n"...)
		c, _ := serveRecording(t, rec)
		n := 0
		err := c.ChatStream(ctxT(t), map[string]any{}, func([]byte, engine.ChatChunk) error { n++; return nil })
		var se *engine.StatusError
		if !errors.As(err, &se) || se.StatusCode != 400 || se.Type != "invalid_request_error" {
			t.Fatalf("err = %v, want the stream's error", err)
		}
		if n != 1 {
			t.Errorf("onChunk called %d times, want 1", n)
		}
	})
	t.Run("garbage chunk", func(t *testing.T) {
		c, _ := serveRecording(t, inStream("data: {not json\n\n"))
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil }, nil)
		if err == nil || errors.Is(err, engine.ErrStreamTruncated) {
			t.Errorf("err = %v, want a decode error", err)
		}
	})
}

func TestCompleteCallbacks(t *testing.T) {
	rec := loadRecording(t, "completion_stream.txt")
	rec.body = append([]byte(": ping 1\n\n"), rec.body...)
	t.Run("ping", func(t *testing.T) {
		c, _ := serveRecording(t, rec)
		var pings []string
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil },
			func(s string) error { pings = append(pings, s); return nil })
		if err != nil || len(pings) != 1 || pings[0] != "ping 1" {
			t.Errorf("pings %q, err %v", pings, err)
		}
	})
	t.Run("no ping callback", func(t *testing.T) {
		c, _ := serveRecording(t, rec)
		if _, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil }, nil); err != nil {
			t.Error(err)
		}
	})
	stop := errors.New("stop")
	t.Run("onPing error", func(t *testing.T) {
		c, _ := serveRecording(t, rec)
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { return nil },
			func(string) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("onChunk error", func(t *testing.T) {
		c, _ := serveRecording(t, rec)
		n := 0
		_, err := c.Complete(ctxT(t), engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error { n++; return stop }, nil)
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("err = %v after %d chunks", err, n)
		}
	})
	t.Run("chat onChunk error", func(t *testing.T) {
		c, _ := serveRecording(t, loadRecording(t, "chat_stream.txt"))
		err := c.ChatStream(ctxT(t), nil, func([]byte, engine.ChatChunk) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("unreachable engine", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c := engine.New(url, nil)
		if _, err := c.Health(ctxT(t)); err == nil {
			t.Error("Health of a closed port succeeded")
		}
		if _, err := c.Complete(ctxT(t), engine.CompletionRequest{}, nil, nil); err == nil {
			t.Error("Complete to a closed port succeeded")
		}
	})
}

// Cancelling the context ends Complete at once and closes the upstream
// request, so llama-server cancels the task and frees the slot.
func TestCompleteCancel(t *testing.T) {
	rec := loadRecording(t, "completion_stream.txt")
	first, _, _ := bytes.Cut(rec.body, []byte("\n\n"))
	upstreamDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body as llama-server does: only then can Go's server
		// notice the client closing the connection.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(first, "\n\n"...))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(upstreamDone)
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	c := engine.New(srv.URL, srv.Client())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt time.Time
	errc := make(chan error, 1)
	go func() {
		_, err := c.Complete(ctx, engine.CompletionRequest{Prompt: "x"}, func(engine.CompletionChunk) error {
			cancelledAt = time.Now()
			cancel()
			return nil
		}, nil)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(cancelledAt); d > time.Second {
			t.Errorf("Complete returned %v after the cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Complete did not return after the cancel")
	}
	select {
	case <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw its request end: the upstream request was not closed")
	}
}

// ChatStream is cancelled the same way.
func TestChatStreamCancel(t *testing.T) {
	rec := loadRecording(t, "chat_stream.txt")
	first, _, _ := bytes.Cut(rec.body, []byte("\n\n"))
	upstreamDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body as llama-server does: only then can Go's server
		// notice the client closing the connection.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(first, "\n\n"...))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(upstreamDone)
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := engine.New(srv.URL, srv.Client()).ChatStream(ctx, nil, func([]byte, engine.ChatChunk) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	select {
	case <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not closed")
	}
}
