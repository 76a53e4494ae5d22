package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strings"

	"github.com/llorch/llorch/promtext"
)

// maxResponseBytes bounds non-streaming responses read from an engine.
const maxResponseBytes = 16 << 20

// Client talks to one llama-server.
type Client struct {
	BaseURL string
	// HTTP defaults to http.DefaultClient; give it timeouts for probes, and
	// none for streams (cancel them with the context).
	HTTP *http.Client
	// ReuseStreamConns keeps connections of streaming requests for reuse.
	// llama-server closes them after a stream anyway; the request then
	// carries an Idempotency-Key so net/http retries it on a fresh
	// connection when a reused one turns out closed before the request was
	// sent — it never reached the engine, so retrying is safe.
	ReuseStreamConns bool
}

// New returns a client of the engine at baseURL.
func New(baseURL string, hc *http.Client) *Client {
	return &Client{BaseURL: strings.TrimSuffix(baseURL, "/"), HTTP: hc}
}

// StatusError is an engine's non-2xx answer, with llama-server's error body
// decoded where it had one.
type StatusError struct {
	StatusCode int
	Type       string // e.g. "unavailable_error", "exceed_context_size_error"
	Message    string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("engine answered %d %s: %s", e.StatusCode, e.Type, e.Message)
	}
	return fmt.Sprintf("engine answered %d", e.StatusCode)
}

// errorBody is llama-server's error envelope.
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) do(ctx context.Context, method, path string, body any, stream bool) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s body: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if stream {
		req.Header.Set("Accept", "text/event-stream")
		if c.ReuseStreamConns {
			req.Header.Set("Idempotency-Key", NewIdempotencyKey())
		} else {
			// llama-server closes the connection after a stream: reusing
			// it makes the next request fail with EOF (see the package doc).
			req.Close = true
		}
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// NewIdempotencyKey names one request to an engine, so that net/http may
// send it again on a fresh connection when a reused one turns out closed
// before the request was written (llama-server closes after streams). It
// must be unique, not secret: the runtime's generator, no system call.
func NewIdempotencyKey() string {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], mrand.Uint64())
	binary.LittleEndian.PutUint32(b[8:], mrand.Uint32())
	return hex.EncodeToString(b[:])
}

// decodeError turns a non-2xx response into a *StatusError and closes it.
func decodeError(resp *http.Response) error {
	defer resp.Body.Close()
	se := &StatusError{StatusCode: resp.StatusCode}
	var eb errorBody
	if data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err == nil && json.Unmarshal(data, &eb) == nil {
		se.Type, se.Message = eb.Error.Type, eb.Error.Message
	}
	return se
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, false)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}

// Health is the engine's readiness.
type Health struct {
	Ready bool
	// Message is llama-server's reason when not ready ("Loading model").
	Message string
}

// Health asks GET /health. A 503 (loading) is a not-ready Health, not an
// error; errors are reserved for an engine that cannot be reached or answers
// something else.
func (c *Client) Health(ctx context.Context) (Health, error) {
	resp, err := c.do(ctx, http.MethodGet, "/health", nil, false)
	if err != nil {
		return Health{}, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return Health{Ready: true}, nil
	case http.StatusServiceUnavailable:
		var se *StatusError
		errors.As(decodeError(resp), &se)
		return Health{Message: se.Message}, nil
	}
	return Health{}, decodeError(resp)
}

// Slot is one entry of GET /slots.
type Slot struct {
	ID           int  `json:"id"`
	NCtx         int  `json:"n_ctx"`
	Speculative  bool `json:"speculative"`
	IsProcessing bool `json:"is_processing"`
	// IDTask is set once the slot has run a task.
	IDTask *int `json:"id_task,omitempty"`
}

// Slots asks GET /slots (the engine needs --slots).
func (c *Client) Slots(ctx context.Context) ([]Slot, error) {
	var s []Slot
	return s, c.getJSON(ctx, "/slots", &s)
}

// Props is the part of GET /props llorch uses.
type Props struct {
	DefaultGenerationSettings struct {
		NCtx int `json:"n_ctx"`
	} `json:"default_generation_settings"`
	TotalSlots int    `json:"total_slots"`
	ModelAlias string `json:"model_alias"`
	ModelPath  string `json:"model_path"`
	BuildInfo  string `json:"build_info"`
}

// Props asks GET /props.
func (c *Client) Props(ctx context.Context) (Props, error) {
	var p Props
	return p, c.getJSON(ctx, "/props", &p)
}

// Metrics is the engine's /metrics, by llamacpp:* name. The KV-cache gauges
// were removed upstream and are not read.
type Metrics struct {
	PromptTokensTotal    float64
	TokensPredictedTotal float64
	PromptSecondsTotal   float64
	PredictedSeconds     float64
	RequestsProcessing   float64
	RequestsDeferred     float64
	// Families holds every family parsed, for callers that need more.
	Families map[string]float64
}

// Metrics asks GET /metrics (the engine needs --metrics) and parses it.
func (c *Client) Metrics(ctx context.Context) (Metrics, error) {
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil, false)
	if err != nil {
		return Metrics{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, decodeError(resp)
	}
	defer resp.Body.Close()
	return ParseMetrics(io.LimitReader(resp.Body, maxResponseBytes))
}

// ParseMetrics parses llama-server's Prometheus text. Every family it has is
// a single unlabelled counter or gauge.
func ParseMetrics(r io.Reader) (Metrics, error) {
	fams, err := promtext.Parse(r)
	if err != nil {
		return Metrics{}, fmt.Errorf("parse engine metrics: %w", err)
	}
	m := Metrics{Families: make(map[string]float64, len(fams))}
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		if v := promtext.Value(f.GetMetric()[0]); !math.IsNaN(v) {
			m.Families[name] = v
		}
	}
	m.PromptTokensTotal = m.Families["llamacpp:prompt_tokens_total"]
	m.TokensPredictedTotal = m.Families["llamacpp:tokens_predicted_total"]
	m.PromptSecondsTotal = m.Families["llamacpp:prompt_seconds_total"]
	m.PredictedSeconds = m.Families["llamacpp:tokens_predicted_seconds_total"]
	m.RequestsProcessing = m.Families["llamacpp:requests_processing"]
	m.RequestsDeferred = m.Families["llamacpp:requests_deferred"]
	return m, nil
}
