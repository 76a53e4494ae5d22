package loadtest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/sse"
)

// readOnce runs readStream over a finished body.
func readOnce(t *testing.T, body string, judge func(e sse.Event) verdict) request {
	t.Helper()
	cfg := DefaultConfig()
	tr := newTraffic(&cfg, "")
	r := request{sent: time.Now(), admitted: true}
	tr.readStream(context.Background(), &r, io.NopCloser(strings.NewReader(body)), judge)
	return r
}

func TestReadStreamJudgesOutcomes(t *testing.T) {
	chunk := `data: {"choices":[{"delta":{"content":"a"}}]}` + "\n\n"
	tests := []struct {
		name   string
		judge  func(sse.Event) verdict
		body   string
		want   Outcome
		code   string
		tokens int
	}{
		{"openai done", judgeOpenAI, chunk + chunk + "data: [DONE]\n\n", Completed, "", 2},
		{"openai error event", judgeOpenAI, chunk + "event: error\ndata: {\"error\":{\"message\":\"x\",\"type\":\"server_error\",\"code\":\"WORKER_RESET\"}}\n\n", Failed, "WORKER_RESET", 1},
		{"openai error chunk", judgeOpenAI, `data: {"error":{"message":"gone","code":"POOL_UNAVAILABLE"}}` + "\n\n", Failed, "POOL_UNAVAILABLE", 0},
		{"openai cut", judgeOpenAI, chunk + chunk, Lost, "", 2},
		{"openai cut mid-event", judgeOpenAI, chunk + "data: [DO", Lost, "", 1},
		{"openai two ends", judgeOpenAI, chunk + "data: [DONE]\n\ndata: [DONE]\n\n", Double, "", 1},
		{"openai keep-alives", judgeOpenAI, ": ping\n\n" + chunk + ": ping\n\ndata: [DONE]\n\n", Completed, "", 1},
		{"v2 end", judgeV2, "event: token\ndata: {\"t\":\"a\"}\n\nevent: end\ndata: {}\n\n", Completed, "", 1},
		{"v2 error", judgeV2, "event: error\ndata: {\"code\":\"SHUTTING_DOWN\",\"message\":\"bye\"}\n\n", Failed, "SHUTTING_DOWN", 0},
		{"v2 token after end", judgeV2, "event: end\ndata: {}\n\nevent: token\ndata: {}\n\n", Double, "", 0},
		{"v2 nothing", judgeV2, "", Lost, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := readOnce(t, tt.body, tt.judge)
			if r.outcome != tt.want || r.code != tt.code || r.tokens != tt.tokens {
				t.Errorf("outcome %s code %q tokens %d; want %s %q %d (err %q)", r.outcome, r.code, r.tokens, tt.want, tt.code, tt.tokens, r.err)
			}
		})
	}
}

// A stream still open when the drain ends is hung, not lost.
func TestReadStreamHung(t *testing.T) {
	cfg := DefaultConfig()
	tr := newTraffic(&cfg, "")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := request{sent: time.Now(), admitted: true}
	done := make(chan struct{})
	go func() { tr.readStream(ctx, &r, pr, judgeV2); close(done) }()
	_, _ = pw.Write([]byte("event: token\ndata: {}\n\n"))
	cancel() // the drain's deadline
	_ = pw.CloseWithError(context.Canceled)
	<-done
	if r.outcome != Hung || r.tokens != 1 {
		t.Errorf("outcome %s tokens %d, want hung after 1 token", r.outcome, r.tokens)
	}
}

func TestCheckTasks(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	reqs := []request{
		{admitted: true, outcome: Completed, sent: at(0), end: at(1)},
		{admitted: true, outcome: Failed, sent: at(0), end: at(1)},
		{outcome: Refused, sent: at(0)},
		{admitted: true, outcome: Lost, sent: at(4), end: at(6)},  // across the kill at 5 s: cut
		{admitted: true, outcome: Lost, sent: at(7), end: at(8)},  // after it: lost
		{admitted: true, outcome: Hung, sent: at(1), end: at(20)}, // hung
		{admitted: true, outcome: Double, sent: at(1), end: at(2)},
	}
	inv := checkTasks(reqs, []restartWindow{{kill: true, stop: at(5), up: at(5.5)}})
	if inv.Violations != 3 {
		t.Errorf("violations %d, want 3 (lost, hung, double): %v", inv.Violations, inv.Examples)
	}
	if reqs[3].outcome != Cut || reqs[4].outcome != Lost {
		t.Errorf("outcomes %s, %s; want cut, lost", reqs[3].outcome, reqs[4].outcome)
	}
	if !strings.Contains(inv.Detail, "6 admitted: 1 lost, 1 hung, 1 ended twice, 0 left open after their end; 1 cut") {
		t.Errorf("detail %q", inv.Detail)
	}
	// A graceful restart cuts nothing: a stream lost across it is lost.
	reqs = []request{{admitted: true, outcome: Lost, sent: at(4), end: at(6)}}
	if inv := checkTasks(reqs, []restartWindow{{stop: at(5), up: at(6)}}); inv.Violations != 1 {
		t.Errorf("lost across a graceful restart: violations %d, want 1", inv.Violations)
	}
}

func FuzzReadStream(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"), false)
	f.Add([]byte("event: error\ndata: {\"code\":\"X\"}\n\n"), true)
	f.Add([]byte("event: end\ndata: {}\n\nevent: end\n\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, v2 bool) {
		judge := judgeOpenAI
		if v2 {
			judge = judgeV2
		}
		r := readOnce(t, string(body), judge)
		switch {
		case r.terminals == 0 && r.outcome != Lost:
			t.Fatalf("no terminal event, outcome %s", r.outcome)
		case r.terminals == 1 && r.outcome != Completed && r.outcome != Failed:
			t.Fatalf("one terminal event, outcome %s", r.outcome)
		case r.terminals > 1 && r.outcome != Double:
			t.Fatalf("%d terminal events, outcome %s", r.terminals, r.outcome)
		}
	})
}
