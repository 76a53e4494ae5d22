package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultPath        = "/v1/chat/completions"
	DefaultMaxTokens   = 32
	DefaultPromptWords = 8
	DefaultGrace       = 10 * time.Second
)

// Config describes one run. The arrival process and the requests depend
// only on Rate, Duration, Seed, MaxTokens/MaxTokensMax and
// PromptWords/PromptWordsMax.
type Config struct {
	// BaseURL is the target, e.g. http://127.0.0.1:8080; requests go to
	// BaseURL + Path.
	BaseURL string
	// Path defaults to DefaultPath.
	Path string
	// Model is sent as "model" when not empty.
	Model string
	// Rate is the mean number of arrivals per second.
	Rate float64
	// Duration is the arrival window: arrivals happen in [0, Duration).
	Duration time.Duration
	// Grace is how long requests still running at Duration may go on;
	// at Duration+Grace they are cancelled and counted Unfinished.
	// Zero means DefaultGrace; negative means no grace at all.
	Grace time.Duration
	// Seed seeds the arrival times and request sizes.
	Seed uint64
	// MaxTokens is each request's max_tokens (default DefaultMaxTokens).
	// With MaxTokensMax > MaxTokens, each request draws max_tokens
	// uniformly from [MaxTokens, MaxTokensMax].
	MaxTokens, MaxTokensMax int
	// PromptWords is the prompt's length in words (default
	// DefaultPromptWords); with PromptWordsMax > PromptWords it is drawn
	// uniformly from [PromptWords, PromptWordsMax].
	PromptWords, PromptWordsMax int
	// Header is added to every request (e.g. Authorization).
	Header http.Header
	// Client sends the requests; nil means NewClient().
	Client *http.Client
}

func (c Config) grace() time.Duration {
	switch {
	case c.Grace == 0:
		return DefaultGrace
	case c.Grace < 0:
		return 0
	}
	return c.Grace
}

// NewClient returns the client Run uses by default: keep-alive, no overall
// timeout (streams are long), no proxy, no compression, and enough idle
// connections per host that an open-loop burst does not churn them.
func NewClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no limit across hosts
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// Arrival is one request of the schedule.
type Arrival struct {
	Index     int
	At        time.Duration // offset from the start of the run
	MaxTokens int
	Prompt    string
}

// words make the prompts; any text does for an engine (or simulator).
var words = strings.Fields(`once upon a time there was a little girl who lived
in a village near the forest she liked to walk with her dog and sing songs
about the sun the moon the river and the old tree on the hill`)

// Arrivals returns the schedule of a run: Poisson arrivals at cfg.Rate over
// cfg.Duration, with their request sizes. It depends only on the rate,
// duration, seed and size settings, and it does not sleep, so it also
// serves to inspect a schedule.
func Arrivals(cfg Config) []Arrival {
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	maxLo, maxHi := rangeOf(cfg.MaxTokens, cfg.MaxTokensMax, DefaultMaxTokens)
	wLo, wHi := rangeOf(cfg.PromptWords, cfg.PromptWordsMax, DefaultPromptWords)
	out := make([]Arrival, 0, int(cfg.Rate*cfg.Duration.Seconds()*1.05)+16)
	var t float64 // seconds
	for {
		t += rng.ExpFloat64() / cfg.Rate
		at := time.Duration(t * float64(time.Second))
		if at >= cfg.Duration {
			return out
		}
		// Every draw happens for every arrival, in the same order, so the
		// schedule is a pure function of the settings.
		n := maxLo + rng.IntN(maxHi-maxLo+1)
		nw := wLo + rng.IntN(wHi-wLo+1)
		var b strings.Builder
		for i := range nw {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[rng.IntN(len(words))])
		}
		out = append(out, Arrival{Index: len(out), At: at, MaxTokens: n, Prompt: b.String()})
	}
}

func rangeOf(lo, hi, def int) (int, int) {
	if lo <= 0 {
		lo = def
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// Run offers cfg's schedule to cfg.BaseURL and returns the result. Arrivals
// stop at cfg.Duration; requests still running at Duration+Grace are
// cancelled and counted Unfinished. Cancelling ctx stops the arrivals and
// cancels every running request (they count Unfinished too).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("loadgen: BaseURL is empty")
	}
	if cfg.Rate <= 0 || math.IsInf(cfg.Rate, 0) || math.IsNaN(cfg.Rate) {
		return nil, fmt.Errorf("loadgen: rate %v: want a positive number of requests per second", cfg.Rate)
	}
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: duration %v: want > 0", cfg.Duration)
	}
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	url := strings.TrimRight(cfg.BaseURL, "/") + path
	client := cfg.Client
	if client == nil {
		client = NewClient()
	}
	arrivals := Arrivals(cfg)
	records := make([]Record, len(arrivals))

	start := time.Now()
	runCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration+cfg.grace()))
	defer cancel()

	window := cfg.Duration // the arrival window, shorter if cancelled
	sent, cut := Pace(runCtx, start, arrivals, func(i int, a *Arrival) {
		rec := &records[i]
		rec.Index, rec.At = a.Index, a.At
		send(runCtx, client, url, cfg, a, start, rec)
	})
	if cut > 0 {
		window = cut
	}
	records = records[:sent]
	elapsed := window
	for i := range records {
		elapsed = max(elapsed, records[i].End)
	}
	res := Summarize(records, elapsed)
	return &res, nil
}

// Pace is the open loop: it calls send for each arrival at start + its
// At, each on its own goroutine, until ctx ends, and returns once every
// send returned. The clock of record is start+At: a late wake-up sends at
// once and the next arrival keeps its own time, so lateness never
// accumulates and no response is ever waited for. It returns how many
// arrivals were sent (the first ones), and when ctx cut the schedule
// short (from start), 0 if it did not.
func Pace(ctx context.Context, start time.Time, arrivals []Arrival, send func(i int, a *Arrival)) (sent int, cut time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := range arrivals {
		a := &arrivals[i]
		if d := time.Until(start.Add(a.At)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return sent, time.Since(start)
		}
		sent++
		wg.Go(func() { send(i, a) })
	}
	return sent, 0
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model     string        `json:"model,omitempty"`
	Messages  []chatMessage `json:"messages"`
	MaxTokens int           `json:"max_tokens"`
	Stream    bool          `json:"stream"`
}

// body is the request body of a: a chat completion, or a plain completion
// when the path says so.
func body(cfg Config, path string, a *Arrival) []byte {
	var v any = chatRequest{Model: cfg.Model, Messages: []chatMessage{{Role: "user", Content: a.Prompt}},
		MaxTokens: a.MaxTokens, Stream: true}
	if strings.HasSuffix(path, "/completions") && !strings.HasSuffix(path, "/chat/completions") {
		v = struct {
			Model     string `json:"model,omitempty"`
			Prompt    string `json:"prompt"`
			MaxTokens int    `json:"max_tokens"`
			Stream    bool   `json:"stream"`
		}{cfg.Model, a.Prompt, a.MaxTokens, true}
	}
	b, _ := json.Marshal(v) // plain structs of strings and ints
	return b
}

// send runs one request and fills rec.
func send(ctx context.Context, client *http.Client, url string, cfg Config, a *Arrival, start time.Time, rec *Record) {
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	sent := time.Now()
	rec.Sent = sent
	rec.Lag = sent.Sub(start.Add(a.At))
	defer func() { rec.End = time.Since(start) }()
	fail := func(o Outcome, err error) {
		rec.Outcome = o
		if err != nil {
			rec.Err = err.Error()
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body(cfg, path, a)))
	if err != nil {
		fail(Failed, err)
		return
	}
	for k, vs := range cfg.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		fail(cutOutcome(ctx), err)
		return
	}
	defer resp.Body.Close()
	rec.Status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		o := Failed
		if resp.StatusCode == http.StatusTooManyRequests {
			o = Rejected
		}
		fail(o, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg)))
		return
	}
	st := scanStream(resp.Body, func() {
		if rec.Tokens == 0 {
			rec.TTFT = time.Since(sent)
		}
		rec.Tokens++
	})
	switch {
	case st.done:
		rec.Latency = time.Since(sent)
		rec.Outcome = OK
		// Read the rest (normally nothing) so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	case st.errEvent:
		fail(Failed, fmt.Errorf("error event: %s", st.errMsg))
	case ctx.Err() != nil:
		fail(Unfinished, context.Cause(ctx))
	case st.err != nil:
		fail(Failed, fmt.Errorf("stream cut before [DONE]: %w", st.err))
	default:
		fail(Failed, errors.New("stream ended before [DONE]"))
	}
}

// RunClosed keeps concurrency requests in flight for duration: each worker
// sends its next request when its last one ends (a closed loop, as a
// saturation test wants: the rate is whatever the target sustains).
// Requests are sized as cfg says; cfg.Rate is ignored.
func RunClosed(ctx context.Context, cfg Config, concurrency int) (*Result, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("loadgen: BaseURL is empty")
	}
	if concurrency < 1 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: concurrency %d, duration %v: want both positive", concurrency, cfg.Duration)
	}
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	url := strings.TrimRight(cfg.BaseURL, "/") + path
	client := cfg.Client
	if client == nil {
		client = NewClient()
	}
	// A schedule's sizes, reused round robin: requests as Run would send.
	sizes := Arrivals(Config{Rate: 1000, Duration: time.Second, Seed: cfg.Seed, MaxTokens: cfg.MaxTokens,
		MaxTokensMax: cfg.MaxTokensMax, PromptWords: cfg.PromptWords, PromptWordsMax: cfg.PromptWordsMax})
	start := time.Now()
	runCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration+cfg.grace()))
	defer cancel()
	perWorker := make([][]Record, concurrency)
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Since(start) < cfg.Duration && runCtx.Err() == nil; i += concurrency {
				a := sizes[i%len(sizes)]
				a.Index, a.At = i, time.Since(start)
				rec := Record{Index: i, At: a.At}
				send(runCtx, client, url, cfg, &a, start, &rec)
				perWorker[w] = append(perWorker[w], rec)
			}
		}()
	}
	wg.Wait()
	var records []Record
	elapsed := cfg.Duration
	for _, rs := range perWorker {
		for i := range rs {
			elapsed = max(elapsed, rs[i].End)
		}
		records = append(records, rs...)
	}
	res := Summarize(records, elapsed)
	return &res, nil
}

// cutOutcome classifies a request that ended with an error: Unfinished when
// the run's deadline (or the caller) cancelled it, else Failed.
func cutOutcome(ctx context.Context) Outcome {
	if ctx.Err() != nil {
		return Unfinished
	}
	return Failed
}
