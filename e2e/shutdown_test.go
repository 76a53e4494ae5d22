//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/sse"
)

// shutdownCode is api.CodeShuttingDown, spelt out so that this test also
// builds against a control plane that predates it.
const shutdownCode = "SHUTTING_DOWN"

// outcome is how one task or OpenAI request ended, as its client saw it.
type outcome struct {
	name     string
	kind     string // "v2" or "openai"
	status   int    // OpenAI: the response status
	last     string // v2: the last event's type; OpenAI stream: "done", "error" or "cut"
	code     string // the error's code, if it ended in one
	retry    bool   // the error said retriable
	tokens   int
	ended    time.Time
	err      error
	started  chan struct{} // closed at the first token
	done     chan struct{} // closed when it ended
	response http.Header
}

// TestSIGTERMDrainsTheControlPlane fills every slot of a fleet with long
// and short streams (v2 tasks and OpenAI streams), queues five more, and
// stops orchestratord with SIGTERM: the queued ones end at once with
// SHUTTING_DOWN, submissions during the drain get 503, the short streams
// finish, the long ones are stopped at the grace with an error event, and
// the process exits 0 soon after.
func TestSIGTERMDrainsTheControlPlane(t *testing.T) {
	const grace = 4 * time.Second
	// The grace comes from the variable, so that a control plane without
	// the flag still starts (and shows what it lacks).
	t.Setenv("ORCHD_SHUTDOWN_GRACE", grace.String())
	f := startFleet(t, 1, 5, "20")

	// Five running: two long v2 tasks, one short (60 tokens at 20/s: 3 s),
	// one long and one short OpenAI stream.
	running := []*outcome{
		f.startV2(t, "run-long-1", 2000), f.startV2(t, "run-long-2", 2000), f.startV2(t, "run-short", 60),
		f.startOpenAI(t, "oa-run-long", 2000), f.startOpenAI(t, "oa-run-short", 60),
	}
	for _, o := range running {
		select {
		case <-o.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not start", o.name)
		}
	}
	// Five queued behind them.
	queued := []*outcome{
		f.startV2(t, "q-1", 5), f.startV2(t, "q-2", 5), f.startV2(t, "q-3", 5),
		f.startOpenAI(t, "oa-q-1", 5), f.startOpenAI(t, "oa-q-2", 5),
	}
	waitFor(t, 5*time.Second, "five tasks queued", func() bool {
		return strings.Contains(get(t, f.url+"/metrics"), `llorch_admission_queue_depth{priority="interactive"} 5`)
	})

	sigterm := time.Now()
	f.cp.signal(t, syscall.SIGTERM)

	// Submissions during the drain are refused with 503 and Retry-After,
	// each route in its own shape.
	time.Sleep(200 * time.Millisecond)
	for _, r := range []struct{ path, body, want string }{
		{"/v2/tasks", `{"prompt":"late","max_tokens":2}`, `"code":"` + shutdownCode + `"`},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"late"}],"max_tokens":2}`, `"error":{`},
	} {
		resp, err := http.Post(f.url+r.path, "application/json", strings.NewReader(r.body))
		if err != nil {
			t.Errorf("POST %s during the drain: %v (want 503)", r.path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(b), r.want) || !strings.Contains(string(b), shutdownCode) {
			t.Errorf("POST %s during the drain: %d Retry-After=%q %s", r.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}

	exited := make(chan int, 1)
	go func() {
		select {
		case <-f.cp.done:
		case <-time.After(grace + 10*time.Second):
		}
		exited <- exitCode(f.cp)
	}()

	all := append(append([]*outcome{}, running...), queued...)
	for _, o := range all {
		waitOutcome(t, o, grace+8*time.Second)
	}
	for _, o := range all {
		t.Logf("%-12s %-6s ended %6v after SIGTERM: %s %s (status %d, %d tokens)", o.name, o.kind,
			o.ended.Sub(sigterm).Round(time.Millisecond), o.last, o.code, o.status, o.tokens)
	}
	for _, o := range queued {
		after := o.ended.Sub(sigterm)
		switch {
		case o.err != nil:
			t.Errorf("queued %s: %v", o.name, o.err)
		case o.kind == "v2" && (o.last != "error" || o.code != shutdownCode || !o.retry):
			t.Errorf("queued %s ended with %s %s retriable=%v, want error %s", o.name, o.last, o.code, o.retry, shutdownCode)
		case o.kind == "openai" && (o.status != http.StatusServiceUnavailable || o.code != shutdownCode || o.response.Get("Retry-After") == ""):
			t.Errorf("queued %s: status %d code %q Retry-After=%q, want 503 %s", o.name, o.status, o.code, o.response.Get("Retry-After"), shutdownCode)
		case after > 2*time.Second:
			t.Errorf("queued %s ended %v after SIGTERM, want at once", o.name, after)
		}
	}
	for _, o := range running {
		after := o.ended.Sub(sigterm)
		short := strings.Contains(o.name, "short")
		switch {
		case o.err != nil:
			t.Errorf("running %s: %v", o.name, o.err)
		case short && o.kind == "v2" && o.last != "end":
			t.Errorf("short %s ended with %s %s, want end", o.name, o.last, o.code)
		case short && o.kind == "openai" && o.last != "done":
			t.Errorf("short %s ended with %s %s, want [DONE]", o.name, o.last, o.code)
		case !short && (o.last != "error" || o.code != shutdownCode || !o.retry):
			t.Errorf("long %s ended with %s %q retriable=%v, want an error event %s", o.name, o.last, o.code, o.retry, shutdownCode)
		case !short && (after < grace-500*time.Millisecond || after > grace+3*time.Second):
			t.Errorf("long %s stopped %v after SIGTERM, want at the grace (%v)", o.name, after, grace)
		}
	}
	if code := <-exited; code != 0 {
		t.Errorf("orchestratord exited %d, want 0", code)
	}
	t.Logf("orchestratord exited %v after SIGTERM", time.Since(sigterm).Round(time.Millisecond))
	if took := time.Since(sigterm); took > grace+5*time.Second {
		t.Errorf("orchestratord took %v to exit, want at most grace + 5s", took)
	}
}

// exitCode is the exit code of an ended process, -1 if it has not ended.
func exitCode(p *proc) int {
	select {
	case <-p.done:
	default:
		return -1
	}
	if p.err == nil {
		return 0
	}
	var code interface{ ExitCode() int }
	if errors.As(p.err, &code) {
		return code.ExitCode()
	}
	return -1
}

func waitOutcome(t *testing.T, o *outcome, d time.Duration) {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(d):
		t.Errorf("%s did not end within %v", o.name, d)
	}
}

// startV2 submits a v2 task and follows its events in the background.
func (f *fleet) startV2(t *testing.T, id string, tokens int) *outcome {
	t.Helper()
	o := &outcome{name: id, kind: "v2", started: make(chan struct{}), done: make(chan struct{})}
	code, _, body := f.submit(t, fmt.Sprintf(`{"task_id":%q,"prompt":"Once upon a time","max_tokens":%d}`, id, tokens))
	if code != http.StatusAccepted {
		t.Fatalf("submit %s: %d %s", id, code, body)
	}
	go func() {
		defer close(o.done)
		defer func() { o.ended = time.Now() }()
		resp, err := http.Get(f.url + "/v2/tasks/" + id + "/events")
		if err != nil {
			o.err = err
			return
		}
		defer resp.Body.Close()
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					o.err = err
				} else if o.last != "end" && o.last != "error" {
					o.err = fmt.Errorf("stream closed after %q, without end or error", o.last)
				}
				return
			}
			if ev.IsComment {
				continue
			}
			o.last = ev.Type
			switch ev.Type {
			case "token":
				if o.tokens == 0 {
					close(o.started)
				}
				o.tokens++
			case "error":
				var e struct {
					Code      string `json:"code"`
					Retriable bool   `json:"retriable"`
				}
				_ = json.Unmarshal([]byte(ev.Data), &e)
				o.code, o.retry = e.Code, e.Retriable
			}
		}
	}()
	return o
}

// startOpenAI sends a streaming chat completion in the background.
func (f *fleet) startOpenAI(t *testing.T, name string, tokens int) *outcome {
	t.Helper()
	o := &outcome{name: name, kind: "openai", started: make(chan struct{}), done: make(chan struct{})}
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":%d,"stream":true}`, simModel, tokens)
	go func() {
		defer close(o.done)
		defer func() { o.ended = time.Now() }()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			o.err = err
			return
		}
		defer resp.Body.Close()
		o.status, o.response = resp.StatusCode, resp.Header
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error struct {
					Code      string `json:"code"`
					Retriable bool   `json:"retriable"`
				} `json:"error"`
			}
			b, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(b, &e)
			o.last, o.code, o.retry = "status", e.Error.Code, e.Error.Retriable
			return
		}
		o.last = "cut"
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					o.err = err
				}
				return
			}
			switch {
			case ev.IsComment:
			case ev.Type == "error":
				var e struct {
					Error struct {
						Code      string `json:"code"`
						Retriable bool   `json:"retriable"`
					} `json:"error"`
				}
				_ = json.Unmarshal([]byte(ev.Data), &e)
				o.last, o.code, o.retry = "error", e.Error.Code, e.Error.Retriable
			case ev.Data == "[DONE]":
				o.last = "done"
			default:
				if o.tokens == 0 {
					close(o.started)
				}
				o.tokens++
			}
		}
	}()
	return o
}
