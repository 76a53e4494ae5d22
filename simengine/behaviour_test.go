package simengine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/simengine"
)

// routes are every route of the simulator, with a body for the POSTs.
var routes = []struct{ method, path, body string }{
	{"GET", "/health", ""},
	{"GET", "/slots", ""},
	{"GET", "/metrics", ""},
	{"GET", "/props", ""},
	{"GET", "/v1/models", ""},
	{"GET", "/models", ""},
	{"POST", "/tokenize", `{"content":"hello world"}`},
	{"POST", "/completion", `{"prompt":"hello","n_predict":2}`},
	{"POST", "/completions", `{"prompt":"hello","n_predict":2}`},
	{"POST", "/v1/completions", `{"prompt":"hello","max_tokens":2}`},
	{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`},
	{"POST", "/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`},
	{"POST", "/completion", `{"prompt":"hello","n_predict":2,"stream":true}`},
	{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`},
}

// errorOf decodes llama-server's error envelope.
func errorOf(t *testing.T, body []byte) (code int, typ, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error.Code, e.Error.Type, e.Error.Message
}

func TestLoadingAnswers503Everywhere(t *testing.T) {
	cfg := fast()
	cfg.LoadTime = time.Hour
	hs := startSim(t, cfg)
	for _, r := range routes {
		got := call(t, hs, r.method, r.path, r.body)
		code, typ, msg := errorOf(t, got.body)
		if got.status != 503 || code != 503 || typ != "unavailable_error" || msg != "Loading model" {
			t.Errorf("%s %s while loading: %d %s", r.method, r.path, got.status, got.body)
		}
	}
	h, err := engine.New(hs.URL, hs.Client()).Health(context.Background())
	if err != nil || h.Ready || h.Message != "Loading model" {
		t.Errorf("engine client sees %+v, %v", h, err)
	}
}

func TestLoadTime(t *testing.T) {
	const load = 300 * time.Millisecond
	cfg := fast()
	cfg.LoadTime = load
	before := time.Now()
	s := simengine.New(cfg)
	after := time.Now()
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	// Poll /health: 503 for every answer that came before the load time,
	// 200 for every request sent after it.
	for ready := false; !ready; {
		sent := time.Now()
		got := call(t, hs, http.MethodGet, "/health", "")
		done := time.Now()
		switch {
		case got.status == 200:
			if done.Sub(before) < load {
				t.Fatalf("ready after %v, before the load time %v", done.Sub(before), load)
			}
			ready = true
		case got.status != 503:
			t.Fatalf("status %d", got.status)
		case sent.Sub(after) > load:
			t.Fatalf("still loading %v after start", sent.Sub(before))
		}
		if time.Since(before) > 10*time.Second {
			t.Fatal("never ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, r := range routes {
		if got := call(t, hs, r.method, r.path, r.body); got.status != 200 {
			t.Errorf("%s %s after loading: %d %s", r.method, r.path, got.status, got.body)
		}
	}
}

// completionResult is the part of a /completion answer the tests read.
type completionResult struct {
	Content         string `json:"content"`
	TokensPredicted int    `json:"tokens_predicted"`
	TokensEvaluated int    `json:"tokens_evaluated"`
	StopType        string `json:"stop_type"`
	Model           string `json:"model"`
	Timings         struct {
		PredictedN         int     `json:"predicted_n"`
		PredictedMS        float64 `json:"predicted_ms"`
		PredictedPerSecond float64 `json:"predicted_per_second"`
	} `json:"timings"`
}

func complete(t *testing.T, hs *httptest.Server, body string) completionResult {
	t.Helper()
	got := call(t, hs, http.MethodPost, "/completion", body)
	if got.status != 200 {
		t.Fatalf("completion %s: %d %s", body, got.status, got.body)
	}
	var r completionResult
	if err := json.Unmarshal(got.body, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeterminism(t *testing.T) {
	hs := startSim(t, fast())
	a := complete(t, hs, `{"prompt":"Once upon a time","n_predict":20,"seed":42}`)
	b := complete(t, hs, `{"prompt":"Once upon a time","n_predict":20,"seed":42}`)
	c := complete(t, hs, `{"prompt":"Once upon a time","n_predict":20,"seed":43}`)
	d := complete(t, hs, `{"prompt":"Once upon a tree","n_predict":20,"seed":42}`)
	if a.Content == "" || a.Content != b.Content {
		t.Errorf("same prompt and seed: %q and %q", a.Content, b.Content)
	}
	if a.Content == c.Content {
		t.Errorf("different seeds gave the same text %q", a.Content)
	}
	if a.Content == d.Content {
		t.Errorf("different prompts gave the same text %q", a.Content)
	}
	// The stream carries the same text as the non-streamed answer.
	got := call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":20,"seed":42,"stream":true}`)
	var text strings.Builder
	for _, ev := range events(t, got.body) {
		var ch struct{ Content string }
		if err := json.Unmarshal([]byte(ev), &ch); err != nil {
			t.Fatal(err)
		}
		text.WriteString(ch.Content)
	}
	if text.String() != a.Content {
		t.Errorf("stream %q, non-stream %q", text.String(), a.Content)
	}
	// The server's --seed stands in for a request without one.
	cfg := fast()
	cfg.Seed = 7
	s1, s2 := startSim(t, cfg), startSim(t, cfg)
	x := complete(t, s1, `{"prompt":"Once upon a time","n_predict":20}`)
	y := complete(t, s2, `{"prompt":"Once upon a time","n_predict":20}`)
	if x.Content != y.Content {
		t.Errorf("--seed 7 twice: %q and %q", x.Content, y.Content)
	}
}

func TestNPredict(t *testing.T) {
	cfg := fast()
	cfg.CtxSize, cfg.Parallel = 64, 2 // 32 tokens per slot
	hs := startSim(t, cfg)
	for _, n := range []int{1, 7, 20} {
		r := complete(t, hs, fmt.Sprintf(`{"prompt":"Once upon a time","n_predict":%d}`, n))
		if r.TokensPredicted != n || r.Timings.PredictedN != n || len(strings.Fields(r.Content)) != n || r.StopType != "limit" {
			t.Errorf("n_predict %d: %+v", n, r)
		}
		got := call(t, hs, http.MethodPost, "/completion", fmt.Sprintf(`{"prompt":"Once upon a time","n_predict":%d,"stream":true}`, n))
		if evs := events(t, got.body); len(evs) != n+1 {
			t.Errorf("n_predict %d: %d events, want %d chunks and the final one", n, len(evs), n)
		}
	}
	// OpenAI spellings.
	got := call(t, hs, http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`)
	var chat struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(got.body, &chat); err != nil || chat.Usage.CompletionTokens != 3 {
		t.Errorf("max_completion_tokens 3: %s", got.body)
	}
	// Beyond the slot's context generation stops at the context.
	r := complete(t, hs, `{"prompt":"Once upon a time","n_predict":100}`)
	if r.TokensEvaluated != 5 || r.TokensPredicted != 32-5 || r.StopType != "limit" {
		t.Errorf("n_predict over the context: %+v", r)
	}
	// Without n_predict it ends at the simulated end of sequence.
	r = complete(t, startSim(t, fast()), `{"prompt":"Once upon a time"}`)
	if r.StopType != "eos" || r.TokensPredicted < 8 || r.TokensPredicted > 64 {
		t.Errorf("no n_predict: %+v", r)
	}
}

func TestPromptOverSlotContext(t *testing.T) {
	cfg := fast()
	cfg.CtxSize, cfg.Parallel = 64, 2 // 32 tokens per slot
	hs := startSim(t, cfg)
	words := func(n int) string { return strings.TrimSpace(strings.Repeat("word ", n)) }
	for _, tc := range []struct {
		path, body string
	}{
		{"/completion", fmt.Sprintf(`{"prompt":%q,"n_predict":1}`, words(40))},
		{"/completion", fmt.Sprintf(`{"prompt":%q,"n_predict":1,"stream":true}`, words(31))}, // BOS + 31 = 32: no room
		{"/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":1}`, words(40))},
		{"/v1/chat/completions", fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":1}`, words(40))},
	} {
		got := call(t, hs, http.MethodPost, tc.path, tc.body)
		code, typ, _ := errorOf(t, got.body)
		if got.status != 400 || code != 400 || typ != "exceed_context_size_error" {
			t.Errorf("%s: %d %s", tc.path, got.status, got.body)
		}
		var e struct {
			Error struct {
				NPromptTokens int `json:"n_prompt_tokens"`
				NCtx          int `json:"n_ctx"`
			} `json:"error"`
		}
		_ = json.Unmarshal(got.body, &e)
		if e.Error.NCtx != 32 || e.Error.NPromptTokens < 32 {
			t.Errorf("%s: %s", tc.path, got.body)
		}
	}
	// One token short of the context still runs.
	if r := complete(t, hs, fmt.Sprintf(`{"prompt":%q,"n_predict":5}`, words(30))); r.TokensEvaluated != 31 || r.TokensPredicted != 1 {
		t.Errorf("prompt of 31 tokens: %+v", r)
	}
	// The engine client reports it as a StatusError.
	_, err := engine.New(hs.URL, hs.Client()).Complete(context.Background(), engine.CompletionRequest{Prompt: words(40)}, func(engine.CompletionChunk) error { return nil }, nil)
	var se *engine.StatusError
	if !errors.As(err, &se) || se.StatusCode != 400 || se.Type != "exceed_context_size_error" {
		t.Errorf("engine client: %v", err)
	}
}

// waitMetrics polls /metrics until cond holds.
func waitMetrics(t *testing.T, c *engine.Client, what string, cond func(engine.Metrics) bool) engine.Metrics {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("never %s: processing %v deferred %v", what, m.RequestsProcessing, m.RequestsDeferred)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestDeferredRequests(t *testing.T) {
	cfg := fast()
	cfg.Parallel, cfg.TokensPerSecond = 2, 50 // 20 tokens: 400 ms a request
	hs := startSim(t, cfg)
	c := engine.New(hs.URL, hs.Client())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			final, err := c.Complete(context.Background(), engine.CompletionRequest{Prompt: fmt.Sprintf("request %d", i), NPredict: 20},
				func(engine.CompletionChunk) error { return nil }, nil)
			if err == nil && final.TokensPredicted != 20 {
				err = fmt.Errorf("request %d: %d tokens", i, final.TokensPredicted)
			}
			errs <- err
		})
	}
	waitMetrics(t, c, "2 processing and 2 deferred", func(m engine.Metrics) bool {
		return m.RequestsProcessing == 2 && m.RequestsDeferred == 2
	})
	slots, err := c.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	busy := 0
	for _, s := range slots {
		if s.IsProcessing {
			busy++
		}
	}
	// The first two may just have finished; never more than two run.
	if len(slots) != 2 || busy > 2 {
		t.Errorf("slots %+v", slots)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	m := waitMetrics(t, c, "idle", func(m engine.Metrics) bool { return m.RequestsProcessing == 0 && m.RequestsDeferred == 0 })
	if m.TokensPredictedTotal != 80 {
		t.Errorf("tokens_predicted_total %v, want 80", m.TokensPredictedTotal)
	}
}

func TestCancelFreesSlot(t *testing.T) {
	cfg := fast()
	cfg.Parallel, cfg.TokensPerSecond = 1, 100
	hs := startSim(t, cfg)
	c := engine.New(hs.URL, hs.Client())

	// A: a long stream that holds the only slot.
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	aStarted := make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		var once sync.Once
		_, err := c.Complete(ctxA, engine.CompletionRequest{Prompt: "long", NPredict: 1000}, func(engine.CompletionChunk) error {
			once.Do(func() { close(aStarted) })
			return nil
		}, nil)
		aDone <- err
	}()
	<-aStarted

	// B: queued behind A.
	bStarted := make(chan time.Time, 1)
	bDone := make(chan error, 1)
	go func() {
		var once sync.Once
		_, err := c.Complete(context.Background(), engine.CompletionRequest{Prompt: "short", NPredict: 5}, func(engine.CompletionChunk) error {
			once.Do(func() { bStarted <- time.Now() })
			return nil
		}, nil)
		bDone <- err
	}()
	waitMetrics(t, c, "B deferred behind A", func(m engine.Metrics) bool {
		return m.RequestsProcessing == 1 && m.RequestsDeferred == 1
	})
	select {
	case <-bStarted:
		t.Fatal("B started while A held the slot")
	default:
	}

	cancelledAt := time.Now()
	cancelA()
	if err := <-aDone; !errors.Is(err, context.Canceled) {
		t.Errorf("A: %v", err)
	}
	select {
	case at := <-bStarted:
		if d := at.Sub(cancelledAt); d > 2*time.Second {
			t.Errorf("B started %v after A's cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B never started after A cancelled: the slot was not freed")
	}
	if err := <-bDone; err != nil {
		t.Errorf("B: %v", err)
	}
	waitMetrics(t, c, "idle", func(m engine.Metrics) bool { return m.RequestsProcessing == 0 && m.RequestsDeferred == 0 })

	// With nothing queued, the cancelled request's slot goes back free.
	ctxD, cancelD := context.WithCancel(context.Background())
	dDone := make(chan error, 1)
	go func() {
		_, err := c.Complete(ctxD, engine.CompletionRequest{Prompt: "long", NPredict: 1000}, func(engine.CompletionChunk) error { return nil }, nil)
		dDone <- err
	}()
	waitMetrics(t, c, "busy", func(m engine.Metrics) bool { return m.RequestsProcessing == 1 })
	cancelD()
	if err := <-dDone; !errors.Is(err, context.Canceled) {
		t.Errorf("D: %v", err)
	}
	waitMetrics(t, c, "free after the cancel", func(m engine.Metrics) bool { return m.RequestsProcessing == 0 })
	if slots, err := c.Slots(context.Background()); err != nil || slots[0].IsProcessing {
		t.Errorf("slots after the cancel: %+v %v", slots, err)
	}

	// A queued request that gives up leaves the queue too.
	ctxC, cancelC := context.WithCancel(context.Background())
	holdDone := make(chan error, 1)
	go func() {
		_, err := c.Complete(context.Background(), engine.CompletionRequest{Prompt: "hold", NPredict: 30}, func(engine.CompletionChunk) error { return nil }, nil)
		holdDone <- err
	}()
	waitMetrics(t, c, "busy", func(m engine.Metrics) bool { return m.RequestsProcessing == 1 })
	cDone := make(chan error, 1)
	go func() {
		_, err := c.Complete(ctxC, engine.CompletionRequest{Prompt: "queued", NPredict: 1}, func(engine.CompletionChunk) error { return nil }, nil)
		cDone <- err
	}()
	waitMetrics(t, c, "queued", func(m engine.Metrics) bool { return m.RequestsDeferred == 1 })
	cancelC()
	if err := <-cDone; !errors.Is(err, context.Canceled) {
		t.Errorf("queued request: %v", err)
	}
	waitMetrics(t, c, "queue empty", func(m engine.Metrics) bool { return m.RequestsDeferred == 0 })
	if err := <-holdDone; err != nil {
		t.Errorf("request ahead of the cancelled one: %v", err)
	}
	waitMetrics(t, c, "idle", func(m engine.Metrics) bool { return m.RequestsProcessing == 0 && m.RequestsDeferred == 0 })
}

// TestEndpointSwitches: as llama-server, /slots is served unless --no-slots
// and /metrics only with --metrics; a route turned off answers 501
// not_supported_error with llama-server's message, and /props says which
// are on.
func TestEndpointSwitches(t *testing.T) {
	const (
		noSlots   = "This server does not support slots endpoint. Start it with `--slots`"
		noMetrics = "This server does not support metrics endpoint. Start it with `--metrics`"
	)
	tests := []struct {
		name                   string
		metrics, no            bool
		wantSlots, wantMetrics bool
	}{
		{name: "defaults: /slots on, /metrics off", wantSlots: true},
		{name: "--metrics", metrics: true, wantSlots: true, wantMetrics: true},
		{name: "--no-slots", metrics: true, no: true, wantMetrics: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fast()
			cfg.Metrics, cfg.NoSlots = tt.metrics, tt.no
			hs := startSim(t, cfg)
			for _, r := range []struct {
				path, msg string
				on        bool
			}{{"/slots", noSlots, tt.wantSlots}, {"/metrics", noMetrics, tt.wantMetrics}} {
				got := call(t, hs, http.MethodGet, r.path, "")
				if r.on {
					if got.status != http.StatusOK {
						t.Errorf("%s: %d %s, want 200", r.path, got.status, got.body)
					}
					continue
				}
				code, typ, msg := errorOf(t, got.body)
				if got.status != 501 || code != 501 || typ != "not_supported_error" || msg != r.msg {
					t.Errorf("%s turned off: %d %s", r.path, got.status, got.body)
				}
			}
			c := engine.New(hs.URL, hs.Client())
			var se *engine.StatusError
			if _, err := c.Slots(context.Background()); tt.wantSlots != (err == nil) || (!tt.wantSlots && (!errors.As(err, &se) || se.StatusCode != 501)) {
				t.Errorf("Slots: %v", err)
			}
			if _, err := c.Metrics(context.Background()); tt.wantMetrics != (err == nil) || (!tt.wantMetrics && (!errors.As(err, &se) || se.StatusCode != 501)) {
				t.Errorf("Metrics: %v", err)
			}
			got := call(t, hs, http.MethodGet, "/props", "")
			var p struct {
				Slots   bool `json:"endpoint_slots"`
				Metrics bool `json:"endpoint_metrics"`
			}
			if err := json.Unmarshal(got.body, &p); err != nil || p.Slots != tt.wantSlots || p.Metrics != tt.wantMetrics {
				t.Errorf("props say %+v (%v)", p, err)
			}
		})
	}
}

func TestRate(t *testing.T) {
	cfg := fast()
	cfg.TokensPerSecond = 200
	hs := startSim(t, cfg)
	start := time.Now()
	r := complete(t, hs, `{"prompt":"Once upon a time","n_predict":40}`)
	d := time.Since(start)
	if d < 150*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("40 tokens at 200/s took %v, want about 200ms", d)
	}
	if r.TokensPredicted != 40 || r.Timings.PredictedMS < 195 || r.Timings.PredictedPerSecond > 205 || r.Timings.PredictedPerSecond < 60 {
		t.Errorf("timings %+v", r.Timings)
	}
}

func TestMetricsCount(t *testing.T) {
	hs := startSim(t, fast())
	c := engine.New(hs.URL, hs.Client())
	complete(t, hs, `{"prompt":"Once upon a time","n_predict":8}`)
	complete(t, hs, `{"prompt":"one two","n_predict":3}`)
	m, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.PromptTokensTotal != 5+3 || m.TokensPredictedTotal != 11 || m.RequestsProcessing != 0 || m.RequestsDeferred != 0 {
		t.Errorf("metrics %+v", m)
	}
	if m.Families["llamacpp:n_tokens_max"] != 13 || m.Families["llamacpp:predicted_tokens_seconds"] <= 0 {
		t.Errorf("families %v", m.Families)
	}
	// The throughput gauges cover the time since the last scrape.
	m, err = c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.Families["llamacpp:predicted_tokens_seconds"] != 0 || m.TokensPredictedTotal != 11 {
		t.Errorf("second scrape %v", m.Families)
	}
}

// The engine client, written against the recordings, works against the
// simulator.
func TestEngineClientAgainstSim(t *testing.T) {
	cfg := fast()
	cfg.Model = "/models/stories260K.gguf"
	hs := startSim(t, cfg)
	c := engine.New(hs.URL, hs.Client())
	ctx := context.Background()
	if h, err := c.Health(ctx); err != nil || !h.Ready {
		t.Errorf("Health %+v %v", h, err)
	}
	p, err := c.Props(ctx)
	if err != nil || p.TotalSlots != 4 || p.DefaultGenerationSettings.NCtx != 256 || p.BuildInfo != simengine.BuildInfo ||
		p.ModelAlias != "stories260K.gguf" || p.ModelPath != "/models/stories260K.gguf" {
		t.Errorf("Props %+v %v", p, err)
	}
	n := 0
	final, err := c.Complete(ctx, engine.CompletionRequest{Prompt: "Once upon a time", NPredict: 6}, func(ch engine.CompletionChunk) error {
		n++
		if ch.TokensPredicted != n || ch.Content == "" {
			t.Errorf("chunk %+v", ch)
		}
		return nil
	}, nil)
	if err != nil || n != 6 || !final.Stop || final.Timings == nil || final.Timings.PredictedN != 6 || final.Model != "stories260K.gguf" {
		t.Errorf("Complete: %d chunks, final %+v, %v", n, final, err)
	}
	chunks := 0
	err = c.ChatStream(ctx, map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 5},
		func([]byte, engine.ChatChunk) error { chunks++; return nil })
	if err != nil || chunks != 1+5+2 {
		t.Errorf("ChatStream: %d chunks, %v", chunks, err)
	}
	slots, err := c.Slots(ctx)
	if err != nil || len(slots) != 4 {
		t.Fatalf("Slots %+v %v", slots, err)
	}
	tasks := 0
	for _, s := range slots {
		if s.NCtx != 256 || s.IsProcessing {
			t.Errorf("slot %+v", s)
		}
		if s.IDTask != nil {
			tasks++
		}
	}
	if tasks == 0 {
		t.Error("no slot records its task")
	}
	got := call(t, hs, http.MethodGet, "/v1/models", "")
	if !strings.Contains(string(got.body), `"id":"stories260K.gguf"`) {
		t.Errorf("models %s", got.body)
	}
}

func TestBadRequests(t *testing.T) {
	hs := startSim(t, fast())
	for _, tc := range []struct{ path, body string }{
		{"/completion", `{`},
		{"/completion", `{"n_predict":1}`},
		{"/completion", `{"prompt":{"a":1}}`},
		{"/completion", `{"prompt":[true]}`},
		{"/v1/chat/completions", `{"max_tokens":1}`},
		{"/tokenize", `nope`},
	} {
		got := call(t, hs, http.MethodPost, tc.path, tc.body)
		code, typ, msg := errorOf(t, got.body)
		if got.status != 400 || code != 400 || typ != "invalid_request_error" || msg == "" {
			t.Errorf("%s %s: %d %s", tc.path, tc.body, got.status, got.body)
		}
	}
	// A prompt may be an array of strings and token ids.
	if r := complete(t, hs, `{"prompt":["Once upon", 17, " a time"],"n_predict":2}`); r.TokensPredicted != 2 || r.TokensEvaluated != 6 {
		t.Errorf("array prompt: %+v", r)
	}
}
