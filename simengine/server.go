package simengine

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/llorch/llorch/engine"
)

// Config describes the simulated engine. Zero values take llama-server's
// defaults where it has one.
type Config struct {
	// Model is the -m path; the engine reports its base name.
	Model    string
	Parallel int // -np: slots
	CtxSize  int // -c: total context, split across slots
	Metrics  bool
	// NoSlots turns GET /slots off (--no-slots): like llama-server, the
	// simulator serves it unless told not to, and answers 501 then.
	NoSlots bool
	// TokensPerSecond is the generation rate of one slot.
	TokensPerSecond float64
	// PromptTokensPerSecond is the prompt processing rate.
	PromptTokensPerSecond float64
	// LoadTime is how long /health answers 503 after start.
	LoadTime time.Duration
	Seed     uint64
	// BuildInfo is reported as build_info and as the engine version.
	BuildInfo string
}

// Defaults of the simulator's own flags (SPEC §9).
const (
	DefaultTokensPerSecond       = 50
	DefaultPromptTokensPerSecond = 2000
	DefaultParallel              = 1
	DefaultCtxSize               = 4096
	BuildInfo                    = "b0-llorch-sim"
)

// Server is one simulated llama-server.
type Server struct {
	cfg      Config
	model    string
	slotCtx  int
	readyAt  time.Time
	start    time.Time
	interval time.Duration // between generated tokens of one slot

	mu       sync.Mutex
	free     []int // free slot ids, LIFO like llama-server's reuse
	waiters  []chan int
	slots    []slotState
	nextTask int
	stats    stats
}

type slotState struct {
	processing    bool
	task          int // -1 before the first task
	promptTokens  int
	nPredict      int
	seed          uint64
	decoded       int
	stream        bool
	hasTaskRecord bool
}

type stats struct {
	promptTokens, predictedTokens    float64
	promptSeconds, predictedSeconds  float64
	decodes                          float64
	nTokensMax                       float64
	deferred, processing             int
	windowPrompt, windowPredicted    float64 // since the last scrape
	windowPromptS, windowPredictedS  float64
	busySlotSamples, busySlotDecodes float64
}

// New returns a simulator; its load clock starts now.
func New(cfg Config) *Server {
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.CtxSize <= 0 {
		cfg.CtxSize = DefaultCtxSize
	}
	if cfg.TokensPerSecond <= 0 {
		cfg.TokensPerSecond = DefaultTokensPerSecond
	}
	if cfg.PromptTokensPerSecond <= 0 {
		cfg.PromptTokensPerSecond = DefaultPromptTokensPerSecond
	}
	if cfg.BuildInfo == "" {
		cfg.BuildInfo = BuildInfo
	}
	model := filepath.Base(cfg.Model)
	if cfg.Model == "" {
		model = "model.gguf"
	}
	now := time.Now()
	s := &Server{
		cfg:      cfg,
		model:    model,
		slotCtx:  cfg.CtxSize / cfg.Parallel,
		start:    now,
		readyAt:  now.Add(cfg.LoadTime),
		interval: time.Duration(float64(time.Second) / cfg.TokensPerSecond),
		slots:    make([]slotState, cfg.Parallel),
	}
	for i := cfg.Parallel - 1; i >= 0; i-- {
		s.free = append(s.free, i)
		s.slots[i].task = -1
	}
	return s
}

// ModelName is the name the engine reports: the base name of -m.
func (s *Server) ModelName() string { return s.model }

// Handler returns the engine's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /slots", s.getSlots)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /props", s.props)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /models", s.models)
	mux.HandleFunc("POST /tokenize", s.tokenizeRoute)
	mux.HandleFunc("POST /completion", s.completion)
	mux.HandleFunc("POST /completions", s.completion)
	mux.HandleFunc("POST /v1/completions", s.openAICompletion)
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletion)
	mux.HandleFunc("POST /chat/completions", s.chatCompletion)
	return s.whileLoading(mux)
}

// loadingBody is llama-server's answer while it loads: its own key order
// (message, type, code), not the error envelope's (code, message, type).
const loadingBody = `{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`

// whileLoading answers every route 503 until the model is "loaded", as
// llama-server does.
func (s *Server) whileLoading(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if time.Now().Before(s.readyAt) {
			writeJSON(w, http.StatusServiceUnavailable, []byte(loadingBody))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes llama-server's error envelope; extra fields follow
// "type" as in exceed_context_size_error.
func writeError(w http.ResponseWriter, status int, typ, msg string, extra map[string]int) {
	var b strings.Builder
	m, _ := json.Marshal(msg)
	fmt.Fprintf(&b, `{"error":{"code":%d,"message":%s,"type":%q`, status, m, typ)
	for _, k := range []string{"n_prompt_tokens", "n_ctx"} {
		if v, ok := extra[k]; ok {
			fmt.Fprintf(&b, `,%q:%d`, k, v)
		}
	}
	b.WriteString("}}")
	writeJSON(w, status, []byte(b.String()))
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// acquire takes a free slot, waiting (deferred) when all are busy. It
// returns -1 if ctx ends first.
func (s *Server) acquire(ctx context.Context) int {
	s.mu.Lock()
	if n := len(s.free); n > 0 {
		id := s.free[n-1]
		s.free = s.free[:n-1]
		s.stats.processing++
		s.mu.Unlock()
		return id
	}
	ch := make(chan int, 1)
	s.waiters = append(s.waiters, ch)
	s.stats.deferred++
	s.mu.Unlock()
	select {
	case id := <-ch:
		return id // release moved the counters for us
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, w := range s.waiters {
			if w == ch {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				s.stats.deferred--
				return -1
			}
		}
		// A slot was handed over while we gave up: pass it on.
		id := <-ch
		s.releaseLocked(id)
		return -1
	}
}

func (s *Server) release(id int) {
	s.mu.Lock()
	s.releaseLocked(id)
	s.mu.Unlock()
}

func (s *Server) releaseLocked(id int) {
	s.slots[id].processing = false
	if len(s.waiters) > 0 {
		ch := s.waiters[0]
		s.waiters = s.waiters[1:]
		s.stats.deferred--
		ch <- id // processing count unchanged: the slot goes straight on
		return
	}
	s.stats.processing--
	s.free = append(s.free, id)
}

// task is one generation request after parsing.
type task struct {
	prompt       string
	promptTokens int
	nPredict     int // -1: until the simulated end of sequence
	seed         uint64
	stream       bool
}

// words is the simulator's vocabulary; token ids are 256 + index.
var words = strings.Fields(`the a little girl boy named Lily Tom Ben Sue she he was
loved to play in park with her his friend dog cat ball big red happy sad day one
sun tree house mom dad said "Look!" and went saw found very tall small blue green
time upon once there were they ran jumped smiled laughed home fun toy box bird`)

// tokenize counts a prompt's tokens: BOS plus one per word, roughly what a
// small vocabulary gives.
func tokenize(prompt string) []int {
	f := strings.Fields(prompt)
	out := make([]int, 0, len(f)+1)
	out = append(out, 1)
	for _, w := range f {
		h := fnv.New32a()
		_, _ = h.Write([]byte(w))
		out = append(out, 256+int(h.Sum32()%uint32(len(words))))
	}
	return out
}

// generator yields the deterministic token sequence of a task.
type generator struct {
	rng    *rand.Rand
	length int // tokens before the simulated end of sequence
}

func newGenerator(t task) *generator {
	h := fnv.New64a()
	_, _ = h.Write([]byte(t.prompt))
	rng := rand.New(rand.NewPCG(t.seed, h.Sum64()))
	return &generator{rng: rng, length: 8 + rng.IntN(57)}
}

func (g *generator) next() (id int, text string) {
	i := g.rng.IntN(len(words))
	return 256 + i, " " + words[i]
}

// timings is llama-server's timing object, as the engine client reads it.
type timings = engine.Timings

func makeTimings(promptN int, promptDur time.Duration, predictedN int, predictedDur time.Duration) timings {
	t := timings{PromptN: promptN, PredictedN: predictedN}
	t.PromptMS = float64(promptDur.Microseconds()) / 1000
	t.PredictedMS = float64(predictedDur.Microseconds()) / 1000
	if promptN > 0 && t.PromptMS > 0 {
		t.PromptPerTokenMS = t.PromptMS / float64(promptN)
		t.PromptPerSecond = 1000 * float64(promptN) / t.PromptMS
	}
	if predictedN > 0 && t.PredictedMS > 0 {
		t.PredictedPerTokenMS = t.PredictedMS / float64(predictedN)
		t.PredictedPerSecond = 1000 * float64(predictedN) / t.PredictedMS
	}
	return t
}

// result is what run reports when a task ends.
type result struct {
	slot      int
	task      int
	predicted int
	stopType  string // "limit" or "eos"
	content   strings.Builder
	timings   timings
	promptN   int
	nPredict  int
}

// run executes t on a slot: waits for one (deferred), "processes" the
// prompt, then emits tokens at the slot's rate through emit. It stops
// early, without error, when ctx ends (client gone).
func (s *Server) run(ctx context.Context, t task, emit func(id int, text string, n int) error) (*result, error) {
	slot := s.acquire(ctx)
	if slot < 0 {
		return nil, ctx.Err()
	}
	defer s.release(slot)
	s.mu.Lock()
	s.nextTask++
	taskID := s.nextTask
	s.slots[slot] = slotState{processing: true, task: taskID, promptTokens: t.promptTokens, nPredict: t.nPredict, seed: t.seed, stream: t.stream, hasTaskRecord: true}
	s.mu.Unlock()

	res := &result{slot: slot, task: taskID, promptN: t.promptTokens, nPredict: t.nPredict, stopType: "limit"}
	promptDur := time.Duration(float64(t.promptTokens) / s.cfg.PromptTokensPerSecond * float64(time.Second))
	if !sleepCtx(ctx, promptDur) {
		return nil, ctx.Err()
	}
	s.mu.Lock()
	s.stats.promptTokens += float64(t.promptTokens)
	s.stats.promptSeconds += promptDur.Seconds()
	s.stats.windowPrompt += float64(t.promptTokens)
	s.stats.windowPromptS += promptDur.Seconds()
	s.stats.decodes++
	s.mu.Unlock()

	g := newGenerator(t)
	limit := t.nPredict
	if limit < 0 || limit > s.slotCtx-t.promptTokens {
		limit = s.slotCtx - t.promptTokens
	}
	genStart := time.Now()
	for i := 0; i < limit; i++ {
		if t.nPredict < 0 && i >= g.length {
			res.stopType = "eos"
			break
		}
		// An absolute schedule: slow emits do not slow the rate.
		if !sleepUntil(ctx, genStart.Add(time.Duration(i+1)*s.interval)) {
			s.account(res.predicted, t.promptTokens, time.Since(genStart))
			return nil, ctx.Err()
		}
		id, text := g.next()
		res.predicted++
		res.content.WriteString(text)
		s.mu.Lock()
		s.slots[slot].decoded = res.predicted
		s.mu.Unlock()
		if err := emit(id, text, res.predicted); err != nil {
			s.account(res.predicted, t.promptTokens, time.Since(genStart))
			return nil, err
		}
	}
	genDur := time.Since(genStart)
	s.account(res.predicted, t.promptTokens, genDur)
	res.timings = makeTimings(t.promptTokens, promptDur, res.predicted, genDur)
	return res, nil
}

// account adds generated tokens to the metrics, also for cancelled tasks.
func (s *Server) account(n, promptTokens int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.nTokensMax = max(s.stats.nTokensMax, float64(promptTokens+n))
	s.stats.predictedTokens += float64(n)
	s.stats.predictedSeconds += d.Seconds()
	s.stats.windowPredicted += float64(n)
	s.stats.windowPredictedS += d.Seconds()
	s.stats.decodes += float64(n)
	s.stats.busySlotSamples += float64(s.stats.processing) * float64(n)
	s.stats.busySlotDecodes += float64(n)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool { return sleepCtx(ctx, time.Until(at)) }
