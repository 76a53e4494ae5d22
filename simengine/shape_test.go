package simengine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/simengine"
)

// fast is a simulator configuration that answers quickly, shaped like the
// recorded llama-server (-np 4 -c 1024 --metrics --slots; /slots is on by
// default).
func fast() simengine.Config {
	return simengine.Config{
		Model: "/models/model.gguf", Parallel: 4, CtxSize: 1024, Metrics: true,
		TokensPerSecond: 5000, PromptTokensPerSecond: 1e6,
	}
}

// startSim serves a simulator on loopback HTTP for the test.
func startSim(t testing.TB, cfg simengine.Config) *httptest.Server {
	t.Helper()
	hs := httptest.NewServer(simengine.New(cfg).Handler())
	t.Cleanup(hs.Close)
	return hs
}

// response is a whole answer of the simulator.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request (a POST when body is not empty) and reads the
// whole answer.
func call(t testing.TB, hs *httptest.Server, method, path, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, data}
}

// checkLike compares status, Content-Type and body shape with a recording.
func checkLike(t *testing.T, got response, fixture string) recording {
	t.Helper()
	rec := loadRecording(t, fixture)
	if got.status != rec.status {
		t.Errorf("%s: status %d, recorded %d (%s)", fixture, got.status, rec.status, got.body)
	}
	if g, w := got.header.Get("Content-Type"), rec.header.Get("Content-Type"); g != w {
		t.Errorf("%s: Content-Type %q, recorded %q", fixture, g, w)
	}
	if w := rec.header.Get("Content-Type"); strings.HasPrefix(w, "application/json") {
		sameShape(t, fixture, got.body, rec.body)
	}
	return rec
}

func TestShapeHealth(t *testing.T) {
	checkLike(t, call(t, startSim(t, fast()), http.MethodGet, "/health", ""), "health.txt")
	loading := fast()
	loading.LoadTime = time.Hour
	checkLike(t, call(t, startSim(t, loading), http.MethodGet, "/health", ""), "health_loading.txt")
}

func TestShapeSlots(t *testing.T) {
	hs := startSim(t, fast())
	checkLike(t, call(t, hs, http.MethodGet, "/slots", ""), "slots.txt")

	if r := call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":8}`); r.status != 200 {
		t.Fatalf("completion: %d %s", r.status, r.body)
	}
	got := call(t, hs, http.MethodGet, "/slots", "")
	rec := checkLike(t, got, "slots_after.txt")
	// Compare the entries one by one: an idle slot with an idle one, the
	// slot that ran the task with one that did.
	pick := func(body []byte, withTask bool) []byte {
		for _, s := range jsonArray(t, body) {
			if bytes.Contains(s, []byte(`"id_task"`)) == withTask {
				return s
			}
		}
		t.Fatalf("no slot with id_task=%v in %s", withTask, body)
		return nil
	}
	sameShape(t, "slot with a task", pick(got.body, true), pick(rec.body, true))
	sameShape(t, "idle slot", pick(got.body, false), pick(rec.body, false))
	if n := len(jsonArray(t, got.body)); n != 4 {
		t.Errorf("%d slots, want 4", n)
	}
}

// metricLines reduces Prometheus text to its HELP and TYPE lines and its
// sample names, in order.
func metricLines(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, "# "):
			out = append(out, line)
		default:
			name, value, ok := strings.Cut(line, " ")
			if !ok || value == "" || strings.Contains(value, " ") {
				t.Errorf("sample line %q", line)
			}
			out = append(out, "sample "+name)
		}
	}
	return out
}

func TestShapeMetrics(t *testing.T) {
	hs := startSim(t, fast())
	if r := call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":8}`); r.status != 200 {
		t.Fatalf("completion: %d %s", r.status, r.body)
	}
	got := call(t, hs, http.MethodGet, "/metrics", "")
	rec := checkLike(t, got, "metrics1.txt")
	g, w := metricLines(t, got.body), metricLines(t, rec.body)
	if len(g) != len(w) {
		t.Errorf("%d lines, recorded %d", len(g), len(w))
	}
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			t.Errorf("line %d: %q, recorded %q", i, g[i], w[i])
		}
	}
	if len(w) != 45 {
		t.Errorf("fixture has %d lines, want 15 metrics x 3", len(w))
	}
}

func TestShapeProps(t *testing.T) {
	checkLike(t, call(t, startSim(t, fast()), http.MethodGet, "/props", ""), "props.txt")
}

func TestShapeModels(t *testing.T) {
	checkLike(t, call(t, startSim(t, fast()), http.MethodGet, "/v1/models", ""), "models.txt")
}

func TestShapeTokenize(t *testing.T) {
	checkLike(t, call(t, startSim(t, fast()), http.MethodPost, "/tokenize", `{"content":"Once upon a time"}`), "tokenize.txt")
}

func TestShapeCompletion(t *testing.T) {
	hs := startSim(t, fast())
	checkLike(t, call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":16}`), "completion.txt")
	checkLike(t, call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":16,"temperature":0}`), "completion_t0.txt")
}

func TestShapeCompletionStream(t *testing.T) {
	got := call(t, startSim(t, fast()), http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":4,"stream":true}`)
	rec := checkLike(t, got, "completion_stream.txt")
	g, w := events(t, got.body), events(t, rec.body)
	if len(g) != 5 || len(w) != 5 {
		t.Fatalf("%d events, recorded %d; want 4 token chunks and the final chunk", len(g), len(w))
	}
	for i := range 4 {
		sameShape(t, "token chunk", []byte(g[i]), []byte(w[i]))
	}
	sameShape(t, "final chunk", []byte(g[4]), []byte(w[4]))
	// No [DONE] on the native route: the final chunk ends the stream.
}

func TestShapeChatStream(t *testing.T) {
	body := `{"messages":[{"role":"user","content":"Say thank you"}],"max_tokens":8,"stream":true}`
	got := call(t, startSim(t, fast()), http.MethodPost, "/v1/chat/completions", body)
	rec := checkLike(t, got, "chat_stream.txt")
	g, w := events(t, got.body), events(t, rec.body)
	if len(g) != len(w) || len(w) != 12 {
		t.Fatalf("%d events, recorded %d; want role, 8 content, finish, usage, [DONE]", len(g), len(w))
	}
	sameShape(t, "role chunk", []byte(g[0]), []byte(w[0]))
	for i := 1; i <= 8; i++ {
		sameShape(t, "content chunk", []byte(g[i]), []byte(w[i]))
	}
	sameShape(t, "finish chunk", []byte(g[9]), []byte(w[9]))
	sameShape(t, "usage chunk", []byte(g[10]), []byte(w[10]))
	if g[11] != "[DONE]" {
		t.Errorf("last event %q, want [DONE]", g[11])
	}
	// Values that clients read.
	var first, fin struct {
		Choices []struct {
			FinishReason *string         `json:"finish_reason"`
			Delta        json.RawMessage `json:"delta"`
		} `json:"choices"`
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(g[0]), &first)
	_ = json.Unmarshal([]byte(g[9]), &fin)
	if string(first.Choices[0].Delta) != `{"role":"assistant","content":null}` || !strings.HasPrefix(first.ID, "chatcmpl-") {
		t.Errorf("role chunk %s", g[0])
	}
	if fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "length" || fin.ID != first.ID {
		t.Errorf("finish chunk %s", g[9])
	}
}

func TestShapeChatNoStream(t *testing.T) {
	body := `{"messages":[{"role":"user","content":"Say thank you"}],"max_tokens":16}`
	checkLike(t, call(t, startSim(t, fast()), http.MethodPost, "/v1/chat/completions", body), "chat_nostream.txt")
}

func TestShapeV1Completions(t *testing.T) {
	checkLike(t, call(t, startSim(t, fast()), http.MethodPost, "/v1/completions", `{"prompt":"Once upon a time","max_tokens":8}`), "v1_completions.txt")
}

// The JSON fragments in templates.go are copied from the recordings: they
// must still match them key for key.
func TestTemplatesMatchRecordings(t *testing.T) {
	hs := startSim(t, fast())
	got := call(t, hs, http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":16}`)
	rec := loadRecording(t, "completion.txt")
	sameShape(t, "generation_settings", jsonField(t, got.body, "generation_settings"), jsonField(t, rec.body, "generation_settings"))

	got = call(t, hs, http.MethodGet, "/props", "")
	rec = loadRecording(t, "props.txt")
	sameShape(t, "props params", jsonField(t, got.body, "default_generation_settings", "params"),
		jsonField(t, rec.body, "default_generation_settings", "params"))
	var g, w string
	_ = json.Unmarshal(jsonField(t, got.body, "chat_template"), &g)
	_ = json.Unmarshal(jsonField(t, rec.body, "chat_template"), &w)
	if g != w || w == "" {
		t.Errorf("chat_template %q, recorded %q", g, w)
	}

	got = call(t, hs, http.MethodGet, "/slots", "")
	rec = loadRecording(t, "slots_after.txt")
	var params []byte
	for _, s := range jsonArray(t, got.body) {
		if bytes.Contains(s, []byte(`"params"`)) {
			params = jsonField(t, s, "params")
		}
	}
	if params == nil {
		t.Fatalf("no slot with params after a task: %s", got.body)
	}
	sameShape(t, "slot params", params, jsonField(t, jsonArray(t, rec.body)[2], "params"))
}
