package controlplane_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/simengine"
	"github.com/llorch/llorch/sse"
)

// The OpenAI routes' X-Priority takes the task API's priorities and
// refuses the others, as the task API refuses "priority".
func TestXPriorityAgreesWithTheTaskAPI(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", sim.URL, 2, 2, "tiny")
	c := testClient(t)
	chat := `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	for _, tc := range []struct {
		priority string
		want     int
	}{{"", 200}, {"interactive", 200}, {"batch", 200}, {"urgent", 400}, {"BATCH", 400}} {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/v1/chat/completions", strings.NewReader(chat))
		if tc.priority != "" {
			req.Header.Set("X-Priority", tc.priority)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("X-Priority %q: %d %s, want %d", tc.priority, resp.StatusCode, body, tc.want)
			continue
		}
		if tc.want != 400 {
			continue
		}
		var e api.OpenAIError
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != api.CodeInvalidParams || e.Error.Type != "invalid_request_error" ||
			!strings.Contains(e.Error.Message, "X-Priority") {
			t.Errorf("X-Priority %q: body %s, want an OpenAI-shaped INVALID_PARAMS naming X-Priority", tc.priority, body)
		}
		// The task API refuses the same value.
		v2, v2body := post(t, c, in.URL+"/v2/tasks", `{"prompt":"x","priority":"`+tc.priority+`"}`)
		if v2.StatusCode != http.StatusBadRequest || !strings.Contains(string(v2body), api.CodeInvalidParams) {
			t.Errorf(`"priority":%q on /v2/tasks: %d %s`, tc.priority, v2.StatusCode, v2body)
		}
	}
}

// A top-level device_mask is placement.device_mask: honoured, not
// ignored; the two may not disagree.
func TestTopLevelDeviceMask(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 1000})
	in := newInference(t, inferenceOpts{})
	for _, p := range []struct{ id, mask string }{{"pool-gpu0", "GPU0"}, {"pool-gpu1", "GPU1"}} {
		in.table.Upsert("/run/llorch/"+p.id+"_r0.json", handoff.Handoff{PoolID: p.id, ReplicaID: "r0", Engine: "llamacpp",
			EngineVersion: "b0-test", URL: sim.URL, SlotsTotal: 4, SlotsFree: 4, DeviceMask: p.mask, Model: handoff.Model{ID: "tiny"}})
	}
	in.d.Wake()
	c := testClient(t)
	for i, body := range []string{
		`{"task_id":"top","prompt":"x","max_tokens":1,"device_mask":"GPU1"}`,
		`{"task_id":"nested","prompt":"x","max_tokens":1,"placement":{"device_mask":"GPU1"}}`,
		`{"task_id":"both","prompt":"x","max_tokens":1,"device_mask":"GPU1","placement":{"device_mask":"GPU1"}}`,
	} {
		resp, b := post(t, c, in.URL+"/v2/tasks", body)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
		id := []string{"top", "nested", "both"}[i]
		if pool := startedPool(t, c, in.URL, id); pool != "pool-gpu1" {
			t.Errorf("%s ran on %q, want pool-gpu1 (the GPU1 pool)", id, pool)
		}
	}
	resp, b := post(t, c, in.URL+"/v2/tasks", `{"prompt":"x","device_mask":"GPU0","placement":{"device_mask":"GPU1"}}`)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "device_mask") {
		t.Errorf("conflicting masks: %d %s, want 400 naming device_mask", resp.StatusCode, b)
	}
	resp, b = post(t, c, in.URL+"/v2/tasks", `{"prompt":"x","device_mask":"GPU7"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), api.CodePoolUnavailable) {
		t.Errorf("a mask no pool has: %d %s, want 503 POOL_UNAVAILABLE", resp.StatusCode, b)
	}
}

// startedPool reads a task's events up to "started" and returns its pool.
func startedPool(t *testing.T, c *http.Client, base, id string) string {
	t.Helper()
	resp, err := c.Get(base + "/v2/tasks/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("events of %s: %v", id, err)
		}
		switch ev.Type {
		case "started":
			var st struct {
				PoolID string `json:"pool_id"`
			}
			_ = json.Unmarshal([]byte(ev.Data), &st)
			return st.PoolID
		case "error":
			t.Fatalf("%s failed: %s", id, ev.Data)
		}
	}
}

// policy_label names the admission policy in force, on every refusal of a
// full queue, in both APIs' shapes.
func TestPolicyLabelSaysThePolicyInForce(t *testing.T) {
	for _, policy := range []admission.Policy{admission.Reject, admission.DropLRU} {
		t.Run(string(policy), func(t *testing.T) {
			sim := startSim(t, simengine.Config{TokensPerSecond: 20})
			in := newInference(t, inferenceOpts{capacity: 1, policy: policy})
			in.announce("pool-0", sim.URL, 1, 1, "tiny")
			c := testClient(t)
			// One interactive task holds the slot, one waits: the queue is
			// full of interactive work, which drop-lru cannot evict.
			for _, id := range []string{"holder", "waiter"} {
				if resp, b := post(t, c, in.URL+"/v2/tasks", `{"task_id":"`+id+`","prompt":"x","max_tokens":100000}`); resp.StatusCode != http.StatusAccepted {
					t.Fatalf("%s: %d %s", id, resp.StatusCode, b)
				}
			}
			clocktest.WaitFor(t, 5*time.Second, "the waiter to queue", func() bool { return in.queue.Len(admission.Interactive) == 1 })
			resp, b := post(t, c, in.URL+"/v2/tasks", `{"prompt":"x"}`)
			var e api.Error
			if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != http.StatusTooManyRequests || e.PolicyLabel != string(policy) {
				t.Errorf("v2 on a full queue: %d %s, want 429 with policy_label %q", resp.StatusCode, b, policy)
			}
			resp, b = post(t, c, in.URL+"/v1/completions", `{"prompt":"x"}`)
			var oe api.OpenAIError
			if err := json.Unmarshal(b, &oe); err != nil || resp.StatusCode != http.StatusTooManyRequests || oe.Error.PolicyLabel != string(policy) {
				t.Errorf("OpenAI on a full queue: %d %s, want 429 with policy_label %q", resp.StatusCode, b, policy)
			}
			for _, id := range []string{"holder", "waiter"} {
				if r, err := c.Post(in.URL+"/v2/tasks/"+id+"/cancel", "", nil); err == nil {
					r.Body.Close()
				}
			}
		})
	}
}
