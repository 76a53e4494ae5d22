package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/simengine"
	"github.com/llorch/llorch/tracing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// inference is a control plane serving the HOME profile's task path, built
// as cmd/orchestratord does: a LocalFleet over a pool table that handoff
// files fill, a dispatcher running its loop, a runner and a proxy sharing
// one engine client.
type inference struct {
	*httptest.Server
	table *pool.Table
	queue *admission.Queue
	d     *dispatch.Dispatcher
	prom  *prometheus.Registry
}

type inferenceOpts struct {
	capacity     int
	policy       admission.Policy
	stall, write time.Duration // the engine stall and client write timeouts
}

func newInference(tb testing.TB, o inferenceOpts) *inference {
	tb.Helper()
	if o.capacity == 0 {
		o.capacity = 256
	}
	if o.policy == "" {
		o.policy = admission.Reject
	}
	quiet := slog.New(slog.DiscardHandler)
	prom := prometheus.NewRegistry()
	table := pool.NewTable([]string{"pool-declared"}) // declared, no engine: not ready
	fleet := controlplane.LocalFleet{Pools: table}
	dm := dispatch.NewMetrics(prom)
	queue := admission.New(o.capacity, o.policy)
	d, err := dispatch.New(dispatch.Options{
		Fleet: fleet, Queue: queue, Logger: quiet, Metrics: dm,
		Scheduling:   scheduler.Options{StaleAfter: 15 * time.Second, Quarantine: 30 * time.Second},
		StallTimeout: o.stall, ClientWriteTimeout: o.write,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		d.Run(ctx)
	}()
	tr := &http.Transport{
		Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: 128, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	engines := &http.Client{Transport: tracing.Transport(tr)}
	in := &controlplane.Inference{
		Fleet: fleet, Dispatcher: d, Tasks: dispatch.NewStore(5 * time.Minute), Metrics: dm,
		Runner: dispatch.NewRunner(d, engines, quiet),
		Proxy:  dispatch.NewProxy(d, engines, quiet),
	}
	h := controlplane.NewHandler(controlplane.Options{Version: "v0.0.0-test", Gatherer: prom, Logger: quiet, Inference: in})
	srv := httptest.NewServer(h)
	tb.Cleanup(func() {
		srv.Close()
		cancel()
		<-stopped
		tr.CloseIdleConnections()
	})
	return &inference{Server: srv, table: table, queue: queue, d: d, prom: prom}
}

// announce upserts a handoff file for an engine, as the watcher would.
func (in *inference) announce(poolID, url string, slots, free int, model string) {
	in.table.Upsert("/run/llorch/"+poolID+"_r0.json", handoff.Handoff{
		PoolID: poolID, ReplicaID: "r0", Engine: "llamacpp", EngineVersion: "b0-test", URL: url,
		SlotsTotal: slots, SlotsFree: free, Model: handoff.Model{ID: model},
	})
	in.d.Wake()
}

func startEngine(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

func startSim(tb testing.TB, cfg simengine.Config) *httptest.Server {
	tb.Helper()
	if cfg.Model == "" {
		cfg.Model = "/models/tiny"
	}
	return startEngine(tb, simengine.New(cfg).Handler())
}

// testClient is a client whose idle connections close with the test.
func testClient(tb testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// answer is a response read whole.
type answer struct {
	StatusCode int
	Header     http.Header
}

func post(t *testing.T, c *http.Client, url, body string) (answer, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return answer{resp.StatusCode, resp.Header}, b
}

// varying are the parts of an OpenAI stream that differ between two runs
// of the same request: ids, timestamps, timings.
var varying = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"id":"(chatcmpl|cmpl)-[A-Za-z0-9]+"`), `"id":"ID"`},
	{regexp.MustCompile(`"created":\d+`), `"created":0`},
	{regexp.MustCompile(`"timings":\{[^}]*\}`), `"timings":{}`},
}

func normalize(b []byte) []byte {
	for _, v := range varying {
		b = v.re.ReplaceAll(b, []byte(v.with))
	}
	return b
}

const chatStream = `{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}],"stream":true,"max_tokens":12,"seed":7}`

func TestChatCompletionStreamPassesThrough(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", sim.URL, 2, 2, "tiny")
	c := testClient(t)

	direct, want := post(t, c, sim.URL+"/v1/chat/completions", chatStream)
	via, got := post(t, c, in.URL+"/v1/chat/completions", chatStream)
	if via.StatusCode != http.StatusOK {
		t.Fatalf("via the control plane: %d %s", via.StatusCode, got)
	}
	if ct := via.Header.Get("Content-Type"); ct != direct.Header.Get("Content-Type") || !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q, engine's %q", ct, direct.Header.Get("Content-Type"))
	}
	if via.Header.Get("X-Llorch-Pool") != "local/pool-0" || via.Header.Get("X-Llorch-Replica") != "r0" || via.Header.Get(api.CorrelationHeader) == "" {
		t.Errorf("headers %v", via.Header)
	}
	if !bytes.HasSuffix(got, []byte("data: [DONE]\n\n")) {
		t.Errorf("stream does not end with [DONE]: %q", tail(got))
	}
	// 1 role chunk, 12 tokens, finish, usage, [DONE].
	if n := bytes.Count(got, []byte("\n\n")); n != 16 {
		t.Errorf("%d chunks, want 16", n)
	}
	if !bytes.Equal(normalize(got), normalize(want)) {
		t.Errorf("the stream was altered on the way:\nvia:    %s\ndirect: %s", normalize(got), normalize(want))
	}
}

func tail(b []byte) []byte { return b[max(0, len(b)-120):] }

func TestNonStreamingCompletionsPassThrough(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", sim.URL, 2, 2, "tiny")
	c := testClient(t)
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"seed":3}`},
		// A placeholder model name is taken as "any" on a one-model fleet.
		{"/v1/completions", `{"model":"gpt-3.5-turbo","prompt":"Once upon a time","max_tokens":6,"seed":3}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			_, want := post(t, c, sim.URL+tc.path, tc.body)
			resp, got := post(t, c, in.URL+tc.path, tc.body)
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), got)
			}
			var v map[string]any
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatalf("not JSON: %v: %s", err, got)
			}
			if !bytes.Equal(normalize(got), normalize(want)) {
				t.Errorf("body altered:\nvia:    %s\ndirect: %s", got, want)
			}
		})
	}
}

// cutStream writes two chunks and ends the response without [DONE].
func cutStream(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "text/event-stream")
	for i := range 2 {
		fmt.Fprintf(w, `data: {"choices":[{"index":0,"delta":{"content":" w%d"}}],"object":"chat.completion.chunk"}`+"\n\n", i)
		http.NewResponseController(w).Flush() //nolint:errcheck // test engine
	}
}

func TestCutStreamEndsWithWorkerReset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		engine http.HandlerFunc
	}{
		{"clean end without [DONE]", cutStream},
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) {
			cutStream(w, r)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			conn.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := startEngine(t, tc.engine)
			in := newInference(t, inferenceOpts{})
			in.announce("pool-0", eng.URL, 1, 1, "tiny")
			resp, body := post(t, testClient(t), in.URL+"/v1/chat/completions", chatStream)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			events := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
			if len(events) != 3 {
				t.Fatalf("%d events, want 2 chunks and an error: %q", len(events), body)
			}
			last := events[2]
			if !strings.HasPrefix(last, "event: error\ndata: ") {
				t.Fatalf("last event %q", last)
			}
			var e struct{ Error api.Error }
			if err := json.Unmarshal([]byte(strings.TrimPrefix(last, "event: error\ndata: ")), &e); err != nil {
				t.Fatal(err)
			}
			if e.Error.Code != api.CodeWorkerReset || !e.Error.Retriable {
				t.Errorf("error %+v, want WORKER_RESET retriable", e.Error)
			}
		})
	}
}

func TestEngineRefusalIsRetriedOnTheNextPool(t *testing.T) {
	bad := startEngine(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"code":500,"message":"boom","type":"server_error"}}`, http.StatusInternalServerError)
	}))
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-a", bad.URL, 1, 1, "tiny")
	in.announce("pool-b", sim.URL, 1, 1, "tiny")
	resp, body := post(t, testClient(t), in.URL+"/v1/chat/completions", chatStream)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Llorch-Pool") != "local/pool-b" {
		t.Fatalf("status %d pool %q: %s", resp.StatusCode, resp.Header.Get("X-Llorch-Pool"), body)
	}
	if !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
		t.Errorf("stream %q", tail(body))
	}
}

func TestListModels(t *testing.T) {
	in := newInference(t, inferenceOpts{})
	a, b := startSim(t, simengine.Config{}), startSim(t, simengine.Config{})
	in.announce("pool-0", a.URL, 1, 1, "tiny")
	in.announce("pool-1", b.URL, 1, 1, "llama-3-8b")
	in.announce("pool-2", b.URL, 1, 1, "tiny")
	resp, err := testClient(t).Get(in.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Object string
		Data   []struct{ ID, Object, OwnedBy string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" {
			t.Errorf("model %s: object %q", m.ID, m.Object)
		}
	}
	if list.Object != "list" || !slices.Equal(ids, []string{"llama-3-8b", "tiny"}) {
		t.Errorf("models %s %v, want list [llama-3-8b tiny]", list.Object, ids)
	}
}

func TestFullQueueAnswers429(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 50})
	in := newInference(t, inferenceOpts{capacity: 1})
	in.announce("pool-0", sim.URL, 1, 1, "tiny")
	c := testClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":10000}`

	// The first request holds the only slot...
	holder := streamReq(t, ctx, c, in.URL, long)
	defer holder.Body.Close()
	if _, err := bufio.NewReader(holder.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// ...the second fills the queue...
	queued := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+"/v1/chat/completions", strings.NewReader(long))
		resp, err := c.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		queued <- err
	}()
	clocktest.WaitFor(t, 5*time.Second, "the second request to queue", func() bool { return in.queue.Len(admission.Interactive) == 1 })
	// ...and the third is turned away.
	resp, body := post(t, c, in.URL+"/v1/chat/completions", long)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// OpenAI's error shape, as every OpenAI client reads it.
	var e api.OpenAIError
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != api.CodeAdmissionReject || e.Error.Type != "rate_limit_error" || e.Error.Message == "" {
		t.Errorf("body %s", body)
	}
	cancel()
	if err := <-queued; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("the queued request: %v", err)
	}
}

func streamReq(t *testing.T, ctx context.Context, c *http.Client, base, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp
}

func TestExplain(t *testing.T) {
	in := newInference(t, inferenceOpts{})
	sim := startSim(t, simengine.Config{})
	in.announce("pool-0", sim.URL, 4, 4, "tiny")
	in.announce("pool-1", sim.URL, 2, 1, "tiny")
	in.announce("pool-full", sim.URL, 1, 0, "tiny")
	in.announce("pool-other", sim.URL, 1, 1, "llama-3-8b")
	resp, err := testClient(t).Get(in.URL + "/v2/placement/explain?model=tiny")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex api.Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		t.Fatal(err)
	}
	if ex.Model != "tiny" || len(ex.Scorers) == 0 {
		t.Errorf("model %q weights %v", ex.Model, ex.Scorers)
	}
	var ranked []string
	for i, c := range ex.Candidates {
		ranked = append(ranked, c.PoolID)
		var sum int64
		for name, v := range c.Components {
			if _, ok := ex.Scorers[name]; !ok {
				t.Errorf("%s: component %s is not a scorer", c.PoolID, name)
			}
			sum += v
		}
		if sum != c.Total || c.Rank != i+1 || c.NodeID != controlplane.LocalNodeID {
			t.Errorf("%s: components sum to %d, total %d, rank %d, node %q", c.PoolID, sum, c.Total, c.Rank, c.NodeID)
		}
	}
	// A handoff file's slots_free is no report of load (it is undated):
	// every pool is free, and at equal expected latency more slots rank
	// first.
	if !slices.Equal(ranked, []string{"pool-0", "pool-1", "pool-full"}) {
		t.Errorf("ranked %v, want [pool-0 pool-1 pool-full] (more free slots first)", ranked)
	}
	for _, c := range ex.Candidates {
		if e := c.Expected; e.LatencyMS <= 0 || e.TTFTMS <= 0 || e.TTFTMS > e.LatencyMS || e.SpeedSource != scheduler.SpeedPrior || !c.HasRoom {
			t.Errorf("%s: expected %+v, has room %v", c.PoolID, e, c.HasRoom)
		}
	}
	rejected := map[string]string{}
	for _, r := range ex.Rejected {
		rejected[r.PoolID] = r.Filter
		if r.Reason == "" {
			t.Errorf("%s rejected without a reason", r.PoolID)
		}
	}
	want := map[string]string{
		"pool-declared": scheduler.ReadyName, "pool-other": scheduler.ModelName,
	}
	if fmt.Sprint(rejected) != fmt.Sprint(want) {
		t.Errorf("rejected %v, want %v", rejected, want)
	}
}

// The v2 task path end to end: submit, then read the events as SSE.
func TestTaskEventsThroughTheHandler(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", sim.URL, 1, 1, "tiny")
	c := testClient(t)
	resp, body := post(t, c, in.URL+"/v2/tasks", `{"task_id":"t-1","model_ref":"tiny","prompt":"Once upon a time","max_tokens":5}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	var acc api.TaskAccepted
	if err := json.Unmarshal(body, &acc); err != nil || acc.Streams["sse"] != "/v2/tasks/t-1/events" || acc.QueuePosition < 0 {
		t.Fatalf("accepted %s", body)
	}
	ev, err := c.Get(in.URL + acc.Streams["sse"])
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Body.Close()
	stream, err := io.ReadAll(ev.Body)
	if err != nil {
		t.Fatal(err)
	}
	var typs []string
	for _, line := range strings.Split(string(stream), "\n") {
		if typ, ok := strings.CutPrefix(line, "event: "); ok {
			typs = append(typs, typ)
		}
	}
	if got, want := strings.Join(typs, " "), "started token token token token token metrics end"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	// Unknown model: 503 before any stream.
	resp, body = post(t, c, in.URL+"/v2/tasks", `{"model_ref":"nope","prompt":"x"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), api.CodeModelNotAvailable) {
		t.Errorf("unknown model: %d %s", resp.StatusCode, body)
	}
}

// slotsBusy counts the engine's processing slots.
func slotsBusy(t *testing.T, c *http.Client, engineURL string) int {
	t.Helper()
	resp, err := c.Get(engineURL + "/slots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var slots []struct {
		IsProcessing bool `json:"is_processing"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&slots); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range slots {
		if s.IsProcessing {
			n++
		}
	}
	return n
}

// freeInExplain is pool's free slots as placement sees them.
func freeInExplain(t *testing.T, c *http.Client, base, poolID string) int {
	t.Helper()
	resp, err := c.Get(base + "/v2/placement/explain")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex api.Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		t.Fatal(err)
	}
	for _, c := range ex.Candidates {
		if c.PoolID == poolID {
			return c.FreeSlots
		}
	}
	return 0
}

// SPEC §5: a client that disconnects cancels its task and frees its slot.
func TestClientDisconnectFreesTheSlot(t *testing.T) {
	t.Run("openai", func(t *testing.T) {
		sim := startSim(t, simengine.Config{TokensPerSecond: 20})
		in := newInference(t, inferenceOpts{})
		in.announce("pool-0", sim.URL, 1, 1, "tiny")
		c := testClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		resp := streamReq(t, ctx, c, in.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":10000}`)
		rd := bufio.NewReader(resp.Body)
		for range 3 { // the role chunk and a token
			if _, err := rd.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
		if slotsBusy(t, c, sim.URL) != 1 || freeInExplain(t, c, in.URL, "pool-0") != 0 {
			t.Fatal("the stream holds no slot")
		}
		cancel()
		resp.Body.Close()
		clocktest.WaitFor(t, time.Second, "the engine's slot to go idle", func() bool { return slotsBusy(t, c, sim.URL) == 0 })
		clocktest.WaitFor(t, time.Second, "placement to stop counting the request", func() bool { return freeInExplain(t, c, in.URL, "pool-0") == 1 })
	})
	t.Run("v2 events", func(t *testing.T) {
		sim := startSim(t, simengine.Config{TokensPerSecond: 20})
		in := newInference(t, inferenceOpts{})
		in.announce("pool-0", sim.URL, 1, 1, "tiny")
		c := testClient(t)
		resp, body := post(t, c, in.URL+"/v2/tasks", `{"task_id":"t-1","prompt":"hi","max_tokens":10000}`)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v2/tasks/t-1/events", nil)
		ev, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(ev.Body)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "event: token\n" {
				break
			}
		}
		cancel()
		ev.Body.Close()
		clocktest.WaitFor(t, time.Second, "the engine's slot to go idle", func() bool { return slotsBusy(t, c, sim.URL) == 0 })
		clocktest.WaitFor(t, time.Second, "placement to stop counting the task", func() bool { return freeInExplain(t, c, in.URL, "pool-0") == 1 })
		// The task ended cancelled; its events stay readable.
		ev2, err := c.Get(in.URL + "/v2/tasks/t-1/events")
		if err != nil {
			t.Fatal(err)
		}
		all, _ := io.ReadAll(ev2.Body)
		ev2.Body.Close()
		if !strings.Contains(string(all), "event: error\ndata: {\"code\":\"CANCELLED\"") {
			t.Errorf("events after the disconnect end %q", tail(all))
		}
	})
}

func TestCancelRoute(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 20})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", sim.URL, 1, 1, "tiny")
	c := testClient(t)
	if resp, body := post(t, c, in.URL+"/v2/tasks", `{"task_id":"t-1","prompt":"hi","max_tokens":10000}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	clocktest.WaitFor(t, 5*time.Second, "the task to reach the engine", func() bool { return slotsBusy(t, c, sim.URL) == 1 })
	resp, _ := post(t, c, in.URL+"/v2/tasks/t-1/cancel", "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	ev, err := c.Get(in.URL + "/v2/tasks/t-1/events")
	if err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(ev.Body)
	ev.Body.Close()
	if !strings.HasSuffix(string(all), "event: error\ndata: {\"code\":\"CANCELLED\",\"message\":\"task cancelled\",\"retriable\":false}\n\n") {
		t.Errorf("events end %q", tail(all))
	}
	clocktest.WaitFor(t, time.Second, "the engine's slot to go idle", func() bool { return slotsBusy(t, c, sim.URL) == 0 })
	if resp, _ := post(t, c, in.URL+"/v2/tasks/nope/cancel", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("cancel of an unknown task: %d", resp.StatusCode)
	}
}

// A one-pool fleet whose engine refuses: the request fails promptly with
// a 503, it does not wait for a second pool that does not exist.
func TestRefusalWithoutAnotherPool(t *testing.T) {
	bad := startEngine(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"code":500,"message":"boom","type":"server_error"}}`, http.StatusInternalServerError)
	}))
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", bad.URL, 1, 1, "tiny")
	begin := time.Now()
	resp, body := post(t, testClient(t), in.URL+"/v1/chat/completions", chatStream)
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("answered after %v", took)
	}
	var e api.OpenAIError
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != http.StatusServiceUnavailable ||
		e.Error.Code != api.CodePoolUnavailable || e.Error.Type != "server_error" || !strings.Contains(e.Error.Message, "500") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d %v: %s", resp.StatusCode, resp.Header, body)
	}
}

func TestRegistryFleet(t *testing.T) {
	reg := registry.New(registry.Options{Timeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	fleet := controlplane.RegistryFleet{Registry: reg}
	if n := len(fleet.Candidates()); n != 0 {
		t.Fatalf("empty registry: %d candidates", n)
	}
	reg.Register(api.RegisterRequest{NodeID: "n2", Address: "http://10.0.0.2:9200"})
	reg.Register(api.RegisterRequest{NodeID: "n1", Address: "http://10.0.0.1:9200"})
	gpus := []api.GPUState{{DeviceID: 0, Utilization: 0.1}, {DeviceID: 1, Utilization: 0.9}}
	if err := reg.Heartbeat("n1", api.HeartbeatRequest{Timestamp: time.Now(), GPUs: gpus, Pools: []api.PoolState{
		{PoolID: "pool-0", Ready: true, SlotsTotal: 2, SlotsFree: 2, DeviceMask: "GPU1", Models: []string{"tiny"}},
		{PoolID: "pool-1", Ready: true, SlotsTotal: 1, SlotsFree: 1, Models: []string{"tiny"}},
	}}); err != nil {
		t.Fatal(err)
	}
	cands := fleet.Candidates()
	var keys []string
	for _, c := range cands {
		keys = append(keys, c.Key())
		if c.NodeStatus != api.StatusOnline {
			t.Errorf("%s: status %s", c.Key(), c.NodeStatus)
		}
	}
	if !slices.Equal(keys, []string{"n1/pool-0", "n1/pool-1"}) {
		t.Fatalf("candidates %v", keys)
	}
	if g := cands[0].GPUs; len(g) != 1 || g[0].DeviceID != 1 {
		t.Errorf("pool-0 (GPU1) gets GPUs %+v", g)
	}
	if g := cands[1].GPUs; len(g) != 2 {
		t.Errorf("pool-1 (no mask) gets GPUs %+v", g)
	}
}

func TestExplainConstraints(t *testing.T) {
	in := newInference(t, inferenceOpts{})
	sim := startSim(t, simengine.Config{})
	in.announce("pool-0", sim.URL, 1, 1, "tiny")
	in.announce("pool-1", sim.URL, 1, 1, "tiny")
	c := testClient(t)
	for _, tc := range []struct {
		query    string
		ranked   []string
		rejected map[string]string
	}{
		{"pin_pool_id=pool-1", []string{"pool-1"}, map[string]string{"pool-0": scheduler.PlacementName}},
		{"avoid_pool=pool-0", []string{"pool-1"}, map[string]string{"pool-0": scheduler.PlacementName}},
		{"node_id=elsewhere", nil, map[string]string{"pool-0": scheduler.PlacementName, "pool-1": scheduler.PlacementName}},
		{"model=nope", nil, map[string]string{"pool-0": scheduler.ModelName, "pool-1": scheduler.ModelName}},
	} {
		resp, err := c.Get(in.URL + "/v2/placement/explain?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var ex api.Explanation
		err = json.NewDecoder(resp.Body).Decode(&ex)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", tc.query, resp.StatusCode, err)
		}
		var ranked []string
		for _, c := range ex.Candidates {
			ranked = append(ranked, c.PoolID)
		}
		rejected := map[string]string{}
		for _, r := range ex.Rejected {
			if r.PoolID != "pool-declared" {
				rejected[r.PoolID] = r.Filter
			}
		}
		if !slices.Equal(ranked, tc.ranked) || fmt.Sprint(rejected) != fmt.Sprint(tc.rejected) {
			t.Errorf("%s: ranked %v rejected %v; want %v %v", tc.query, ranked, rejected, tc.ranked, tc.rejected)
		}
	}
}

// explained returns pool's candidate in GET /v2/placement/explain.
func explained(t *testing.T, c *http.Client, base, poolID string) api.ExplainedCandidate {
	t.Helper()
	resp, err := c.Get(base + "/v2/placement/explain?model=tiny")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex api.Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		t.Fatal(err)
	}
	for _, c := range ex.Candidates {
		if c.PoolID == poolID {
			return c
		}
	}
	t.Fatalf("%s not ranked in %+v", poolID, ex)
	return api.ExplainedCandidate{}
}

// Both front ends teach placement the pool's speed from the engine's own
// timings: a pool never measured is estimated from the prior, then from
// what its tasks showed; the prediction error is counted.
func TestCompletedTasksTeachThePoolsSpeed(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *http.Client, base string)
	}{
		{"openai stream", func(t *testing.T, c *http.Client, base string) {
			resp, body := post(t, c, base+"/v1/chat/completions",
				`{"model":"tiny","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"Once upon a time"}]}`)
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("[DONE]")) {
				t.Fatalf("%d %s", resp.StatusCode, tail(body))
			}
		}},
		{"openai, not streamed", func(t *testing.T, c *http.Client, base string) {
			resp, body := post(t, c, base+"/v1/completions", `{"model":"tiny","max_tokens":20,"prompt":"Once upon a time"}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, tail(body))
			}
		}},
		{"v2 task", func(t *testing.T, c *http.Client, base string) {
			resp, body := post(t, c, base+"/v2/tasks", `{"task_id":"t-1","model_ref":"tiny","prompt":"Once upon a time","max_tokens":20}`)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("submit: %d %s", resp.StatusCode, body)
			}
			ev, err := c.Get(base + "/v2/tasks/t-1/events")
			if err != nil {
				t.Fatal(err)
			}
			defer ev.Body.Close()
			if b, _ := io.ReadAll(ev.Body); !bytes.Contains(b, []byte("event: end")) {
				t.Fatalf("events %s", b)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := startSim(t, simengine.Config{TokensPerSecond: 400, Parallel: 2})
			in := newInference(t, inferenceOpts{})
			in.announce("pool-0", sim.URL, 2, 2, "tiny")
			c := testClient(t)
			before := explained(t, c, in.URL, "pool-0")
			if before.Expected.SpeedSource != scheduler.SpeedPrior || before.Expected.Samples != 0 {
				t.Fatalf("before any task: %+v", before.Expected)
			}
			tc.run(t, c, in.URL)
			var after api.ExplainedCandidate
			clocktest.WaitFor(t, 5*time.Second, "the pool's speed to be learned", func() bool {
				after = explained(t, c, in.URL, "pool-0")
				return after.Expected.Samples == 1
			})
			// The simulator generates 400 tokens/s a slot and says so in
			// its timings.
			if e := after.Expected; e.SpeedSource != scheduler.SpeedLearned || e.DecodeTPS < 300 || e.DecodeTPS > 500 {
				t.Errorf("after one task: %+v, want about 400 tokens/s learned", e)
			}
			n, err := testutil.GatherAndCount(in.prom, "llorch_placement_ttft_prediction_error_seconds")
			if err != nil || n != 2 {
				t.Errorf("prediction error series: %d, %v", n, err)
			}
		})
	}
}
