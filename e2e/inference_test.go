//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/sse"
)

const simModel = "stories260K.gguf"

type fleet struct {
	cp     *proc
	url    string
	client *api.Client
	agents map[string]*agentProc
}

// startFleet starts orchestratord and n agents, each launching one
// simulated engine with slots slots at tps tokens/s, and waits until every
// pool is ready in the control plane.
func startFleet(t *testing.T, n, slots int, tps string, cpFlags ...string) *fleet {
	t.Helper()
	port := freePort(t)
	f := &fleet{url: "http://" + addr(port), agents: map[string]*agentProc{}}
	f.cp = startControlPlane(t, port, append([]string{"--metrics-interval", "300ms"}, cpFlags...)...)
	f.client = &api.Client{BaseURL: f.url}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("node-%d", i)
		f.agents[id] = startAgent(t, id, f.url, "--engine", "sim", "--model", "/models/"+simModel,
			"--engine-slots", fmt.Sprint(slots), "--engine-args", "--tokens-per-second "+tps,
			"--gpu-source", "sim", "--sim-gpus", "1xH200:141GiB", "--engine-poll-interval", "300ms")
	}
	waitFor(t, 15*time.Second, "every pool ready", func() bool {
		ns := nodes(f.client, false)
		ready := 0
		for _, node := range ns {
			for _, p := range node.Pools {
				if p.Ready {
					ready++
				}
			}
		}
		return ready == n
	})
	return f
}

// submit posts a v2 task and returns the status and body.
func (f *fleet) submit(t *testing.T, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(f.url+"/v2/tasks", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type taskEvent struct {
	Type string
	Data map[string]any
}

// events reads a task's whole event stream.
func (f *fleet) events(t *testing.T, id string) []taskEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/v2/tasks/"+id+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []taskEvent
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("events of %s: %v", id, err)
		}
		if ev.IsComment {
			continue
		}
		var data map[string]any
		if err := json.Unmarshal([]byte(ev.Data), &data); err != nil {
			t.Fatalf("event %s data %q: %v", ev.Type, ev.Data, err)
		}
		out = append(out, taskEvent{ev.Type, data})
	}
}

func types(evs []taskEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Type)
	}
	return strings.Join(s, ",")
}

func TestInferencePath(t *testing.T) {
	f := startFleet(t, 3, 2, "50")

	t.Run("v2 task streams started, tokens, metrics, end", func(t *testing.T) {
		code, hdr, body := f.submit(t, `{"task_id":"first","prompt":"Once upon a time","max_tokens":5,"model_ref":"`+simModel+`","seed":7}`)
		if code != http.StatusAccepted || hdr.Get(api.CorrelationHeader) == "" {
			t.Fatalf("submit: %d %s", code, body)
		}
		var acc api.TaskAccepted
		if err := json.Unmarshal(body, &acc); err != nil || acc.TaskID != "first" || acc.Streams["sse"] != "/v2/tasks/first/events" {
			t.Fatalf("accepted = %s (%v)", body, err)
		}
		evs := f.events(t, "first")
		if got := types(evs); got != "started,token,token,token,token,token,metrics,end" {
			t.Fatalf("events: %s", got)
		}
		if evs[0].Data["node_id"] == "" || evs[0].Data["pool_id"] != "pool-0" {
			t.Fatalf("started = %v", evs[0].Data)
		}
		if evs[len(evs)-1].Data["tokens_out"] != float64(5) {
			t.Fatalf("end = %v", evs[len(evs)-1].Data)
		}
		// A late subscriber sees the same events from the start.
		if again := types(f.events(t, "first")); again != types(evs) {
			t.Fatalf("replay: %s", again)
		}
	})

	t.Run("concurrent tasks spread over the fleet by free slots", func(t *testing.T) {
		const n = 6 // = 3 nodes x 2 slots
		for i := range n {
			if code, _, body := f.submit(t, fmt.Sprintf(`{"task_id":"spread-%d","prompt":"hello","max_tokens":25}`, i)); code != http.StatusAccepted {
				t.Fatalf("submit: %d %s", code, body)
			}
		}
		perNode := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				evs := f.events(t, fmt.Sprintf("spread-%d", i))
				if len(evs) == 0 || evs[0].Type != "started" || evs[len(evs)-1].Type != "end" {
					t.Errorf("spread-%d: %s", i, types(evs))
					return
				}
				mu.Lock()
				perNode[evs[0].Data["node_id"].(string)]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if len(perNode) != 3 || perNode["node-1"] != 2 || perNode["node-2"] != 2 || perNode["node-3"] != 2 {
			t.Fatalf("placements per node = %v, want 2 on each", perNode)
		}
	})

	t.Run("pin and avoid", func(t *testing.T) {
		f.submit(t, `{"task_id":"pinned","prompt":"x","max_tokens":2,"placement":{"mode":"pin","pin_pool_id":"pool-0","node_id":"node-2"}}`)
		f.submit(t, `{"task_id":"avoiding","prompt":"x","max_tokens":2,"placement":{"avoid_pools":["node-1/pool-0","node-2/pool-0"]}}`)
		if got := f.events(t, "pinned")[0].Data["node_id"]; got != "node-2" {
			t.Fatalf("pinned task ran on %v", got)
		}
		if got := f.events(t, "avoiding")[0].Data["node_id"]; got != "node-3" {
			t.Fatalf("avoiding task ran on %v", got)
		}
		code, _, body := f.submit(t, `{"prompt":"x","model_ref":"llama-70b"}`)
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), api.CodeModelNotAvailable) {
			t.Fatalf("unknown model: %d %s", code, body)
		}
		code, _, body = f.submit(t, `{"prompt":"x","placement":{"mode":"pin","pin_pool_id":"pool-9"}}`)
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), api.CodePoolUnavailable) {
			t.Fatalf("pin to a missing pool: %d %s", code, body)
		}
	})

	t.Run("unmodified OpenAI client", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(f.url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		models, err := client.Models.List(ctx)
		if err != nil || len(models.Data) != 1 || models.Data[0].ID != simModel {
			t.Fatalf("models: %+v %v", models, err)
		}
		params := openai.ChatCompletionNewParams{
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
			Model:     simModel,
			MaxTokens: openai.Int(8),
		}
		done, err := client.Chat.Completions.New(ctx, params)
		if err != nil || len(done.Choices) != 1 || done.Choices[0].Message.Content == "" || done.Usage.CompletionTokens != 8 {
			t.Fatalf("chat: %+v %v", done, err)
		}
		stream := client.Chat.Completions.NewStreaming(ctx, params)
		var text strings.Builder
		chunks := 0
		for stream.Next() {
			chunks++
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
		}
		if err := stream.Err(); err != nil || chunks < 8 || len(strings.Fields(text.String())) != 8 {
			t.Fatalf("stream: %d chunks, %q, %v", chunks, text.String(), err)
		}
		comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model: openai.CompletionNewParamsModel(simModel), Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")},
			MaxTokens: openai.Int(4),
		})
		if err != nil || len(comp.Choices) != 1 || len(strings.Fields(comp.Choices[0].Text)) != 4 {
			t.Fatalf("completion: %+v %v", comp, err)
		}
	})

	t.Run("llorch submit and explain", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(binDir, "llorch"), "--url", f.url, "submit", "-n", "6", "--session", "cli", "Once upon a time").Output()
		if err != nil {
			t.Fatalf("llorch submit: %v", err)
		}
		if words := strings.Fields(string(out)); len(words) != 6 {
			t.Fatalf("llorch submit printed %q, want 6 tokens", out)
		}
		out, err = exec.Command(filepath.Join(binDir, "llorch"), "--url", f.url, "explain", "-m", simModel).Output()
		if err != nil {
			t.Fatalf("llorch explain: %v", err)
		}
		if !strings.Contains(string(out), "EXPECTED-LATENCY") || !strings.Contains(string(out), "tok/s (learned") || strings.Count(string(out), "/pool-0") != 3 {
			t.Fatalf("llorch explain printed:\n%s", out)
		}
		if err := exec.Command(filepath.Join(binDir, "llorch"), "--url", f.url, "submit", "-m", "absent-model", "x").Run(); err == nil {
			t.Fatal("llorch submit for an absent model exited 0")
		}
	})

	t.Run("cancel frees the slot", func(t *testing.T) {
		f.submit(t, `{"task_id":"long","prompt":"x","max_tokens":2000,"placement":{"mode":"pin","pin_pool_id":"pool-0","node_id":"node-1"}}`)
		a := f.agents["node-1"]
		waitFor(t, 5*time.Second, "slot busy", func() bool {
			return strings.Contains(get(t, a.url+"/metrics"), `llorch_pool_slots_busy{node_id="node-1",pool_id="pool-0"} 1`)
		})
		resp, err := http.Post(f.url+"/v2/tasks/long/cancel", "application/json", nil)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("cancel: %v %v", resp, err)
		}
		resp.Body.Close()
		evs := f.events(t, "long")
		last := evs[len(evs)-1]
		if last.Type != "error" || last.Data["code"] != "CANCELLED" {
			t.Fatalf("after cancel: %s %v", types(evs), last.Data)
		}
		waitFor(t, 3*time.Second, "slot free again", func() bool {
			return strings.Contains(get(t, a.url+"/metrics"), `llorch_pool_slots_busy{node_id="node-1",pool_id="pool-0"} 0`)
		})
	})

	t.Run("client disconnect frees the slot", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		body := `{"simModel":"` + simModel + `","messages":[{"role":"user","content":"x"}],"max_tokens":2000,"stream":true}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		pool := resp.Header.Get("X-Llorch-Pool") // node/pool
		node, _, _ := strings.Cut(pool, "/")
		buf := make([]byte, 512)
		if _, err := resp.Body.Read(buf); err != nil {
			t.Fatal(err)
		}
		a := f.agents[node]
		if a == nil {
			t.Fatalf("X-Llorch-Pool = %q", pool)
		}
		busy := fmt.Sprintf(`llorch_pool_slots_busy{node_id=%q,pool_id="pool-0"} 1`, node)
		waitFor(t, 5*time.Second, "slot busy while streaming", func() bool { return strings.Contains(get(t, a.url+"/metrics"), busy) })
		cancel()
		resp.Body.Close()
		waitFor(t, 3*time.Second, "slot free after disconnect", func() bool {
			return strings.Contains(get(t, a.url+"/metrics"), fmt.Sprintf(`llorch_pool_slots_busy{node_id=%q,pool_id="pool-0"} 0`, node))
		})
	})

	t.Run("SIGKILL of the serving node gives WORKER_RESET; later tasks avoid it", func(t *testing.T) {
		f.submit(t, `{"task_id":"doomed","prompt":"x","max_tokens":2000,"placement":{"mode":"pin","pin_pool_id":"pool-0","node_id":"node-3"}}`)
		got := make(chan []taskEvent, 1)
		go func() { got <- f.events(t, "doomed") }()
		a := f.agents["node-3"]
		waitFor(t, 5*time.Second, "doomed streaming", func() bool {
			return strings.Contains(get(t, a.url+"/metrics"), `llorch_pool_slots_busy{node_id="node-3",pool_id="pool-0"} 1`)
		})
		a.signal(t, syscall.SIGKILL) // its engine dies with it (Pdeathsig)
		var evs []taskEvent
		select {
		case evs = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream hung after the node died")
		}
		last := evs[len(evs)-1]
		if last.Type != "error" || last.Data["code"] != api.CodeWorkerReset || last.Data["retriable"] != true {
			t.Fatalf("after SIGKILL: %s %v", types(evs), last.Data)
		}
		for i := range 4 {
			id := fmt.Sprintf("after-%d", i)
			f.submit(t, `{"task_id":"`+id+`","prompt":"x","max_tokens":2}`)
			if node := f.events(t, id)[0].Data["node_id"]; node == "node-3" {
				t.Fatalf("%s placed on the dead node", id)
			}
		}
	})

	t.Run("metrics of the inference path", func(t *testing.T) {
		m := get(t, f.url+"/metrics")
		for _, want := range []string{"llorch_tasks_total{outcome=\"completed\"}", "llorch_tasks_total{outcome=\"cancelled\"}",
			"llorch_tasks_total{outcome=\"worker_reset\"} 1", "llorch_placement_decisions_total{outcome=\"placed\"}",
			"llorch_placement_duration_seconds_count", "llorch_task_time_to_first_token_seconds_count{node_id=\"node-",
			"llorch_proxy_overhead_seconds_count", "llorch_admission_queue_depth{priority=\"batch\"} 0"} {
			if !strings.Contains(m, want) {
				t.Errorf("control plane metrics lack %s", want)
			}
		}
	})
}

func TestAdmissionQueueFull(t *testing.T) {
	f := startFleet(t, 1, 1, "20", "--admission-capacity", "2")
	// One task holds the only slot; two wait; the fourth is refused.
	for i := range 3 {
		if code, _, body := f.submit(t, fmt.Sprintf(`{"task_id":"q%d","prompt":"x","max_tokens":30,"priority":"batch"}`, i)); code != http.StatusAccepted {
			t.Fatalf("q%d: %d %s", i, code, body)
		}
		if i == 0 {
			waitFor(t, 5*time.Second, "q0 running", func() bool {
				return strings.Contains(get(t, f.url+"/metrics"), `llorch_admission_queue_depth{priority="batch"} 0`) &&
					strings.Contains(get(t, f.url+"/metrics"), `llorch_placement_decisions_total{outcome="placed"} 1`)
			})
		}
	}
	code, hdr, body := f.submit(t, `{"prompt":"x","max_tokens":2}`)
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), api.CodeAdmissionReject) {
		t.Fatalf("full queue: %d Retry-After=%q %s", code, hdr.Get("Retry-After"), body)
	}
	// An OpenAI request meets the same admission.
	resp, err := http.Post(f.url+"/v1/completions", "application/json", bytes.NewBufferString(`{"simModel":"`+simModel+`","prompt":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("OpenAI on a full queue: %d", resp.StatusCode)
	}
	for i := range 3 {
		f.events(t, fmt.Sprintf("q%d", i)) // let them finish before cleanup
	}
}

func TestDropLRUEvictsTheOldestBatchTask(t *testing.T) {
	f := startFleet(t, 1, 1, "20", "--admission-capacity", "2", "--admission-policy", "drop-lru")
	f.submit(t, `{"task_id":"running","prompt":"x","max_tokens":30}`)
	waitFor(t, 5*time.Second, "running placed", func() bool {
		return strings.Contains(get(t, f.url+"/metrics"), `llorch_placement_decisions_total{outcome="placed"} 1`)
	})
	f.submit(t, `{"task_id":"old-batch","prompt":"x","max_tokens":2,"priority":"batch"}`)
	f.submit(t, `{"task_id":"new-batch","prompt":"x","max_tokens":2,"priority":"batch"}`)
	if code, _, body := f.submit(t, `{"task_id":"urgent","prompt":"x","max_tokens":2}`); code != http.StatusAccepted {
		t.Fatalf("urgent: %d %s", code, body)
	}
	evs := f.events(t, "old-batch")
	if last := evs[len(evs)-1]; last.Type != "error" || last.Data["code"] != api.CodeQueueFullDropLRU {
		t.Fatalf("old-batch: %s %v", types(evs), last.Data)
	}
	// The interactive task is served before the remaining batch one.
	urgent, newBatch := f.events(t, "urgent"), f.events(t, "new-batch")
	if types(urgent) == "" || urgent[len(urgent)-1].Type != "end" || newBatch[len(newBatch)-1].Type != "end" {
		t.Fatalf("urgent %s, new-batch %s", types(urgent), types(newBatch))
	}
}
