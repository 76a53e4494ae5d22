package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestArrivalsDeterministic(t *testing.T) {
	cfg := Config{Rate: 40, Duration: 10 * time.Second, Seed: 7, MaxTokens: 16, MaxTokensMax: 64, PromptWords: 3, PromptWordsMax: 12}
	a, b := Arrivals(cfg), Arrivals(cfg)
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different schedules: %d vs %d arrivals", len(a), len(b))
	}
	// The target settings do not change the schedule.
	other := cfg
	other.BaseURL, other.Model, other.Grace = "http://elsewhere", "m", time.Minute
	if !reflect.DeepEqual(a, Arrivals(other)) {
		t.Fatal("the schedule depends on more than rate, duration, seed and sizes")
	}
	cfg.Seed = 8
	if reflect.DeepEqual(a, Arrivals(cfg)) {
		t.Fatal("seeds 7 and 8 gave the same schedule")
	}
	for i, x := range a {
		if x.Index != i || x.At < 0 || x.At >= cfg.Duration || (i > 0 && x.At < a[i-1].At) {
			t.Fatalf("arrival %d = %+v (previous %+v)", i, x, a[max(i-1, 0)])
		}
		if x.MaxTokens < 16 || x.MaxTokens > 64 {
			t.Fatalf("arrival %d max_tokens %d outside [16, 64]", i, x.MaxTokens)
		}
		if n := len(strings.Fields(x.Prompt)); n < 3 || n > 12 {
			t.Fatalf("arrival %d prompt %q has %d words, want [3, 12]", i, x.Prompt, n)
		}
	}
	fixed := Arrivals(Config{Rate: 40, Duration: time.Second, Seed: 1})
	for _, x := range fixed {
		if x.MaxTokens != DefaultMaxTokens || len(strings.Fields(x.Prompt)) != DefaultPromptWords {
			t.Fatalf("defaults: %+v", x)
		}
	}
	if Arrivals(Config{Rate: 0, Duration: time.Second}) != nil || Arrivals(Config{Rate: 1}) != nil {
		t.Fatal("no rate or no duration must give no arrivals")
	}
}

// TestArrivalsRate checks the Poisson process over a long simulated window
// (no sleeping): the count within 4 standard deviations of rate x window,
// and exponential gaps (mean 1/rate, coefficient of variation 1).
func TestArrivalsRate(t *testing.T) {
	for _, rate := range []float64{0.5, 10, 95} {
		window := 2 * time.Hour
		a := Arrivals(Config{Rate: rate, Duration: window, Seed: 42})
		want := rate * window.Seconds()
		if d := math.Abs(float64(len(a)) - want); d > 4*math.Sqrt(want) {
			t.Errorf("rate %v over %v: %d arrivals, want %.0f +- %.0f", rate, window, len(a), want, 4*math.Sqrt(want))
		}
		var sum, sumSq float64
		prev := time.Duration(0)
		for _, x := range a {
			g := (x.At - prev).Seconds()
			sum += g
			sumSq += g * g
			prev = x.At
		}
		n := float64(len(a))
		mean := sum / n
		cv := math.Sqrt(sumSq/n-mean*mean) / mean
		if math.Abs(mean*rate-1) > 0.05 || math.Abs(cv-1) > 0.05 {
			t.Errorf("rate %v: mean gap %.4fs (want %.4fs), cv %.3f (want 1)", rate, mean, 1/rate, cv)
		}
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{ms(5), 50, 5 * time.Millisecond},
		{ms(5), 99, 5 * time.Millisecond},
		{ms(1, 2), 50, 1 * time.Millisecond},
		{ms(1, 2), 51, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 90, 90 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond}, // not 100: p*n is exact
		{hundred, 99.5, 100 * time.Millisecond},
		{hundred, 0, 1 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.sorted, c.p); got != c.want {
			t.Errorf("Percentile(%d values, %v) = %v, want %v", len(c.sorted), c.p, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	recs := []Record{
		{Outcome: OK, TTFT: 10 * time.Millisecond, Latency: 100 * time.Millisecond, Tokens: 32, Lag: time.Millisecond},
		{Outcome: OK, TTFT: 30 * time.Millisecond, Latency: 300 * time.Millisecond, Tokens: 32},
		{Outcome: OK, TTFT: 20 * time.Millisecond, Latency: 200 * time.Millisecond, Tokens: 32, Lag: 3 * time.Millisecond},
		{Outcome: Rejected, Status: 429},
		{Outcome: Failed, Status: 500},
		{Outcome: Failed, Tokens: 5},
		{Outcome: Unfinished, Tokens: 7},
	}
	r := Summarize(recs, 2*time.Second)
	if r.Offered != 7 || r.Completed != 3 || r.Rejected != 1 || r.Failed != 2 || r.Unfinished != 1 {
		t.Fatalf("counts %+v", r)
	}
	if r.TTFT.P50 != 20*time.Millisecond || r.TTFT.Max != 30*time.Millisecond || r.Latency.P99 != 300*time.Millisecond {
		t.Fatalf("percentiles ttft %+v latency %+v", r.TTFT, r.Latency)
	}
	if r.Tokens != 96 || r.RequestsPerSecond != 1.5 || r.TokensPerSecond != 48 || r.MaxLag != 3*time.Millisecond {
		t.Fatalf("throughput %+v", r)
	}
	b, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(b), `"ttft":{"p50_ms":20,"p90_ms":30,"p99_ms":30,"max_ms":30}`) ||
		strings.Contains(string(b), "records") {
		t.Fatalf("JSON %s, %v", b, err)
	}
}

// chunk is one chat completion chunk as llama-server streams it.
func chunk(content string) string {
	b, _ := json.Marshal(map[string]any{"object": "chat.completion.chunk",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}}}})
	return "data: " + string(b) + "\n\n"
}

// streamHandler streams a role chunk, n tokens gap apart, then [DONE].
func streamHandler(n int, gap time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		_, _ = io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}`+"\n\n")
		fl.Flush()
		for i := range n {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, chunk(fmt.Sprintf(" t%d", i)))
			fl.Flush()
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}
}

// run offers a short load (about 10 requests) to h.
func run(t *testing.T, h http.Handler, grace time.Duration) *Result {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	cfg := Config{BaseURL: srv.URL, Rate: 50, Duration: 200 * time.Millisecond, Grace: grace, Seed: 3}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(Arrivals(cfg)); res.Offered != want || want == 0 {
		t.Fatalf("offered %d, schedule has %d", res.Offered, want)
	}
	return res
}

func TestRunCompletes(t *testing.T) {
	var body atomic.Value
	res := run(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body.Store(string(b))
		if r.URL.Path != DefaultPath || r.Method != http.MethodPost {
			http.Error(w, "wrong route", http.StatusNotFound)
			return
		}
		streamHandler(3, 15*time.Millisecond)(w, r)
	}), time.Second)
	if res.Completed != res.Offered || res.Tokens != 3*res.Offered {
		t.Fatalf("result %+v", res)
	}
	for _, rec := range res.Records {
		if rec.Status != 200 || rec.Tokens != 3 || rec.TTFT < 15*time.Millisecond ||
			rec.Latency < 45*time.Millisecond || rec.Latency < rec.TTFT || rec.Err != "" {
			t.Fatalf("record %+v", rec)
		}
	}
	var req map[string]any
	if err := json.Unmarshal([]byte(body.Load().(string)), &req); err != nil {
		t.Fatal(err)
	}
	msgs, _ := req["messages"].([]any)
	if req["stream"] != true || req["max_tokens"] != float64(DefaultMaxTokens) || len(msgs) != 1 {
		t.Fatalf("request body %v", req)
	}
	if _, ok := req["model"]; ok {
		t.Fatalf("no model set, yet the body has one: %v", req)
	}
}

func TestRunClassifies(t *testing.T) {
	cases := []struct {
		name    string
		h       http.HandlerFunc
		outcome Outcome
		errHas  string
	}{
		{"429 is rejected", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"code":"ADMISSION_REJECT"}`, http.StatusTooManyRequests)
		}, Rejected, "ADMISSION_REJECT"},
		{"503 fails", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no pool", http.StatusServiceUnavailable)
		}, Failed, "HTTP 503"},
		{"cut stream fails", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, chunk("a")+chunk("b"))
			// returns without [DONE]
		}, Failed, "before [DONE]"},
		{"connection dropped mid-stream fails", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, chunk("a"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, Failed, "before [DONE]"},
		{"error event fails", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, chunk("a")+"event: error\ndata: {\"code\":\"WORKER_RESET\"}\n\n"+chunk("b")+"data: [DONE]\n\n")
		}, Failed, "WORKER_RESET"},
		{"error chunk fails", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, `data: {"error":{"code":500,"message":"boom"}}`+"\n\ndata: [DONE]\n\n")
		}, Failed, "boom"},
		{"garbage chunk fails", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {not json\n\ndata: [DONE]\n\n")
		}, Failed, "not json"},
		{"hung request is unfinished", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, chunk("a"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, Unfinished, "context deadline exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c.h, 100*time.Millisecond)
			for _, rec := range res.Records {
				if rec.Outcome != c.outcome || !strings.Contains(rec.Err, c.errHas) {
					t.Fatalf("record %+v: want %v with error containing %q", rec, c.outcome, c.errHas)
				}
			}
			if res.Completed != 0 || res.TTFT.P50 != 0 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestRunOpenLoop: a server that never answers does not slow the arrivals;
// the run ends at Duration + Grace with every request unfinished.
func TestRunOpenLoop(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	cfg := Config{BaseURL: srv.URL, Rate: 300, Duration: 400 * time.Millisecond, Grace: 100 * time.Millisecond, Seed: 9}
	begin := time.Now()
	res, err := Run(context.Background(), cfg)
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(Arrivals(cfg)); res.Offered != want || res.Unfinished != want {
		t.Fatalf("offered %d, unfinished %d, schedule %d", res.Offered, res.Unfinished, want)
	}
	if res.MaxLag > 150*time.Millisecond {
		t.Fatalf("the arrival clock slipped %v behind a hung server", res.MaxLag)
	}
	if took > cfg.Duration+cfg.Grace+time.Second {
		t.Fatalf("run took %v, want about %v", took, cfg.Duration+cfg.Grace)
	}
}

func TestRunCancelled(t *testing.T) {
	srv := httptest.NewServer(streamHandler(1, time.Hour))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{BaseURL: srv.URL, Rate: 100, Duration: time.Minute, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Offered == 0 || res.Unfinished != res.Offered || res.Elapsed > 10*time.Second {
		t.Fatalf("cancelled run %+v", res)
	}
}

func TestRunConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Rate: 1, Duration: time.Second},
		{BaseURL: "http://x", Duration: time.Second},
		{BaseURL: "http://x", Rate: math.Inf(1), Duration: time.Second},
		{BaseURL: "http://x", Rate: 1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) did not fail", cfg)
		}
	}
}
