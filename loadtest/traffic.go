package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/loadgen"
	"github.com/llorch/llorch/sse"
)

// Outcome is how a request ended, as the harness judges it.
type Outcome string

// Outcomes. Only Completed and Failed end an admitted request properly;
// Lost, Hung, Double and Unclosed break the first invariant; Cut is a
// loss the harness caused by killing the control plane.
const (
	Completed Outcome = "completed" // admitted, ended by [DONE] / end, once
	Failed    Outcome = "failed"    // admitted, ended by an error event, once
	Refused   Outcome = "refused"   // not admitted: an error status, or no connection
	Lost      Outcome = "lost"      // admitted, its stream ended without end or error
	Hung      Outcome = "hung"      // still open, without end or error, when the drain ended
	Double    Outcome = "double"    // admitted, more than one end or error, or events after one
	Unclosed  Outcome = "unclosed"  // ended properly, but its stream stayed open after
	Cut       Outcome = "cut"       // lost across a control-plane kill the harness made
)

// API names a request's route.
const (
	OpenAI = "openai" // POST /v1/chat/completions, streaming
	V2     = "v2"     // POST /v2/tasks, then GET /v2/tasks/{id}/events
)

// request is one request of the load.
type request struct {
	api        string
	sent       time.Time
	firstToken time.Time
	end        time.Time
	status     int
	admitted   bool
	outcome    Outcome
	code       string // the error's code: refusal or error event
	tokens     int
	terminals  int
	err        string
}

// closeWait is how long a stream may stay open after its end or error.
const closeWait = 5 * time.Second

// traffic is the open-loop load: Poisson arrivals from loadgen, each a
// request on its own goroutine, none waiting for another.
type traffic struct {
	cfg    *Config
	url    string
	client *http.Client
	runID  string
	reqs   []request

	inflight                                              atomic.Int64
	sent, completed, failed, refused, lost, hung, doubled atomic.Int64

	ttftMu sync.Mutex
	ttft   []time.Duration // first tokens of the current second
}

func newTraffic(cfg *Config, url string) *traffic {
	return &traffic{cfg: cfg, url: url, client: loadgen.NewClient(), runID: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)}
}

// run sends the schedule and waits for every request; ctx's deadline is
// the end of the drain, after which open requests are hung.
func (t *traffic) run(ctx context.Context, start time.Time) {
	arrivals := loadgen.Arrivals(loadgen.Config{Rate: t.cfg.Rate, Duration: t.cfg.Duration, Seed: t.cfg.Seed,
		MaxTokens: t.cfg.MaxTokens, MaxTokensMax: t.cfg.MaxTokensMax, PromptWords: t.cfg.PromptWords, PromptWordsMax: t.cfg.PromptWordsMax})
	t.reqs = make([]request, len(arrivals))
	sent, _ := loadgen.Pace(ctx, start, arrivals, func(i int, a *loadgen.Arrival) {
		r := &t.reqs[i]
		r.api = t.apiOf(i)
		t.send(ctx, r, a)
	})
	t.reqs = t.reqs[:sent]
}

func (t *traffic) apiOf(i int) string {
	switch t.cfg.Mode {
	case OpenAI, V2:
		return t.cfg.Mode
	}
	if i%2 == 0 {
		return OpenAI
	}
	return V2
}

func (t *traffic) send(ctx context.Context, r *request, a *loadgen.Arrival) {
	t.sent.Add(1)
	t.inflight.Add(1)
	defer t.inflight.Add(-1)
	r.sent = time.Now()
	if r.api == V2 {
		t.sendV2(ctx, r, a)
	} else {
		t.sendOpenAI(ctx, r, a)
	}
	r.end = time.Now()
	switch r.outcome {
	case Completed:
		t.completed.Add(1)
	case Failed:
		t.failed.Add(1)
	case Refused:
		t.refused.Add(1)
	case Hung:
		t.hung.Add(1)
	case Double, Unclosed:
		t.doubled.Add(1)
	default:
		t.lost.Add(1)
	}
}

func (t *traffic) firstToken(r *request) {
	r.firstToken = time.Now()
	d := r.firstToken.Sub(r.sent)
	t.ttftMu.Lock()
	t.ttft = append(t.ttft, d)
	t.ttftMu.Unlock()
}

// takeTTFT returns the first tokens since the last call.
func (t *traffic) takeTTFT() []time.Duration {
	t.ttftMu.Lock()
	defer t.ttftMu.Unlock()
	out := t.ttft
	t.ttft = nil
	return out
}

func (t *traffic) post(ctx context.Context, path string, body any, accept string) (*http.Response, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if t.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+t.cfg.Token)
	}
	return t.client.Do(req)
}

// refused records an answer that did not admit the request.
func refused(r *request, resp *http.Response) {
	r.outcome, r.status = Refused, resp.StatusCode
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var e struct {
		Code  string `json:"code"`
		Error *struct {
			Code any `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		r.code = e.Code
		if e.Error != nil {
			r.code = fmt.Sprint(e.Error.Code)
		}
	}
	if r.code == "" {
		r.code = fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
}

// broken classifies a call that failed before an answer: the request
// hung if the drain ended first; else it was refused (not admitted yet)
// or lost (admitted).
func broken(ctx context.Context, r *request, err error) {
	r.err = err.Error()
	switch {
	case ctx.Err() != nil:
		r.outcome = Hung
	case r.admitted:
		r.outcome = Lost
	default:
		r.outcome, r.code = Refused, "no connection"
	}
}

func (t *traffic) sendOpenAI(ctx context.Context, r *request, a *loadgen.Arrival) {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	body := struct {
		Model     string `json:"model"`
		Messages  []msg  `json:"messages"`
		MaxTokens int    `json:"max_tokens"`
		Stream    bool   `json:"stream"`
	}{t.cfg.Model, []msg{{"user", a.Prompt}}, a.MaxTokens, true}
	resp, err := t.post(ctx, "/v1/chat/completions", body, "text/event-stream")
	if err != nil {
		broken(ctx, r, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		refused(r, resp)
		return
	}
	r.status, r.admitted = resp.StatusCode, true
	t.readOpenAI(ctx, r, resp.Body)
}

// readOpenAI reads an OpenAI stream to its end.
func (t *traffic) readOpenAI(ctx context.Context, r *request, body io.Reader) {
	t.readStream(ctx, r, body, judgeOpenAI)
}

// verdict is what one event of a stream means to the harness.
type verdict struct {
	token    bool    // a generated token
	terminal Outcome // Completed or Failed when the event ends the stream
	code     string  // the error's code, for Failed
	err      string  // something unreadable, kept for the report
}

// judgeOpenAI reads one event of an OpenAI stream: [DONE], an error (as
// an "error" event or an error chunk) or a content chunk.
func judgeOpenAI(e sse.Event) verdict {
	data := []byte(strings.TrimSpace(e.Data))
	switch {
	case e.Type == "error":
		return verdict{terminal: Failed, code: openAICode(data)}
	case string(data) == "[DONE]":
		return verdict{terminal: Completed}
	}
	c, err := loadgen.ParseChunk(data)
	switch {
	case err != nil:
		return verdict{err: "chunk not JSON: " + err.Error()}
	case c.Error != "":
		return verdict{terminal: Failed, code: openAICode(data)}
	}
	return verdict{token: c.Content}
}

// judgeV2 reads one event of a v2 task's stream: token, end or error.
func judgeV2(e sse.Event) verdict {
	switch e.Type {
	case "token":
		return verdict{token: true}
	case "end":
		return verdict{terminal: Completed}
	case "error":
		v := verdict{terminal: Failed}
		var ae api.Error
		if json.Unmarshal([]byte(e.Data), &ae) == nil {
			v.code = ae.Code
		}
		return v
	}
	return verdict{}
}

// readStream reads an event stream to its end, counting its terminal
// events and anything after one; a stream still open closeWait after its
// terminal event is closed (and judged Unclosed).
func (t *traffic) readStream(ctx context.Context, r *request, body io.Reader, judge func(sse.Event) verdict) {
	rd := sse.NewReader(body)
	var endedAt time.Time
	for {
		e, err := rd.Next()
		if err != nil {
			t.ended(ctx, r, err, endedAt)
			return
		}
		if e.IsComment {
			continue
		}
		if r.terminals > 0 {
			r.terminals++ // anything after the end
			continue
		}
		v := judge(e)
		if v.err != "" {
			r.err = v.err
		}
		if v.token {
			if r.tokens == 0 {
				t.firstToken(r)
			}
			r.tokens++
		}
		if v.terminal != "" {
			r.terminals++
			r.outcome, r.code = v.terminal, v.code
			endedAt = time.Now()
			closeAfter(ctx, body, closeWait)
		}
	}
}

// closeAfter closes body if it is still open d from now, so a stream that
// stays open after its end is not read forever.
func closeAfter(ctx context.Context, body io.Reader, d time.Duration) {
	rc, ok := body.(io.Closer)
	if !ok {
		return
	}
	time.AfterFunc(d, func() { _ = rc.Close() })
}

// ended classifies a stream at its end (err: io.EOF, a read error, or
// a close by closeAfter).
func (t *traffic) ended(ctx context.Context, r *request, err error, endedAt time.Time) {
	switch {
	case r.terminals > 1:
		r.outcome = Double
	case r.terminals == 1 && !errors.Is(err, io.EOF) && time.Since(endedAt) >= closeWait-100*time.Millisecond:
		r.outcome = Unclosed
	case r.terminals == 1:
		// Completed or Failed, set when the terminal came.
	case ctx.Err() != nil:
		r.outcome = Hung
	default:
		r.outcome = Lost
		if !errors.Is(err, io.EOF) {
			r.err = err.Error()
		} else {
			r.err = "stream ended without end or error"
		}
	}
}

func openAICode(data []byte) string {
	var e struct {
		Error struct {
			Code any `json:"code"`
		} `json:"error"`
		Code string `json:"code"`
	}
	if json.Unmarshal(data, &e) != nil {
		return "unparsed"
	}
	if e.Error.Code != nil {
		return fmt.Sprint(e.Error.Code)
	}
	return e.Code
}

func (t *traffic) sendV2(ctx context.Context, r *request, a *loadgen.Arrival) {
	id := fmt.Sprintf("%s%s-%d", t.cfg.NodePrefix, t.runID, a.Index)
	resp, err := t.post(ctx, "/v2/tasks", api.TaskRequest{TaskID: id, Prompt: a.Prompt, MaxTokens: a.MaxTokens,
		ModelRef: t.cfg.Model, Priority: "interactive"}, "")
	if err != nil {
		broken(ctx, r, err)
		return
	}
	if resp.StatusCode != http.StatusAccepted {
		refused(r, resp)
		resp.Body.Close()
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.status, r.admitted = resp.StatusCode, true
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url+"/v2/tasks/"+id+"/events", nil)
	if err != nil {
		broken(ctx, r, err)
		return
	}
	if t.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+t.cfg.Token)
	}
	ev, err := t.client.Do(req)
	if err != nil {
		broken(ctx, r, err)
		return
	}
	defer ev.Body.Close()
	if ev.StatusCode != http.StatusOK {
		r.outcome, r.err = Lost, fmt.Sprintf("events: HTTP %d", ev.StatusCode)
		return
	}
	t.readStream(ctx, r, ev.Body, judgeV2)
}
