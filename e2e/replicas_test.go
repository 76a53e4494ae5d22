//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/engine"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/sse"
)

// busySlots counts an engine's slots processing a request; -1 when its
// /slots does not answer.
func busySlots(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	slots, err := engine.New(url, http.DefaultClient).Slots(ctx)
	if err != nil {
		return -1
	}
	n := 0
	for _, s := range slots {
		if s.IsProcessing {
			n++
		}
	}
	return n
}

// deferred is an engine's llamacpp:requests_deferred; -1 when its
// /metrics does not answer.
func deferred(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := engine.New(url, http.DefaultClient).Metrics(ctx)
	if err != nil {
		return -1
	}
	return int(m.RequestsDeferred)
}

// eventsSoFar reads a task's events for up to d: those emitted so far
// (a subscriber gets every event from the start), whether or not the task
// has ended.
func eventsSoFar(base, id string, d time.Duration) []taskEvent {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/tasks/"+id+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out []taskEvent
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			return out
		}
		var data map[string]any
		if ev.IsComment || json.Unmarshal([]byte(ev.Data), &data) != nil {
			continue
		}
		out = append(out, taskEvent{ev.Type, data})
	}
}

// TestPoolReplicasShareTheLoad: one agent, one pool, two replicas of 2
// slots each (two sim engines announced by pool-0_r0.json and
// pool-0_r1.json). Four concurrent long streams through the control plane
// run 2 on each engine, and the heartbeat and explain show both replicas;
// once one replica's engine is killed and its handoff file removed, its
// streams end with WORKER_RESET, the other's go on, and new tasks go to
// the surviving replica.
func TestPoolReplicasShareTheLoad(t *testing.T) {
	cpPort := freePort(t)
	cpURL := "http://" + addr(cpPort)
	f := &fleet{url: cpURL, client: &api.Client{BaseURL: cpURL}, agents: map[string]*agentProc{}}
	f.cp = startControlPlane(t, cpPort, "--metrics-interval", "300ms")
	a := startAgent(t, "node-1", cpURL, "--engine-poll-interval", "300ms")
	f.agents["node-1"] = a

	engines := map[string]*proc{}
	urls := map[string]string{}
	files := map[string]string{}
	for _, r := range []string{"r0", "r1"} {
		port := freePort(t)
		urls[r] = "http://" + addr(port)
		engines[r] = start(t, "llorch", "engine-"+r, []string{"sim-engine", "-m", "/models/" + simModel,
			"--port", fmt.Sprint(port), "-np", "2", "--metrics", "--tokens-per-second", "50"})
		waitHealthy(t, urls[r])
		path, err := handoff.WriteFile(a.runtimeDir, handoff.Handoff{
			PoolID: "pool-0", ReplicaID: r, Engine: "llamacpp", EngineVersion: "b0-llorch-sim",
			URL: urls[r], SlotsTotal: 2, SlotsFree: 2, Model: handoff.Model{Path: "/models/" + simModel},
		})
		if err != nil {
			t.Fatal(err)
		}
		files[r] = path
	}
	waitFor(t, 10*time.Second, "pool-0 ready with 4 slots", func() bool {
		p, ok := poolState(f.client, "node-1", "pool-0")
		return ok && p.Ready && p.SlotsTotal == 4
	})

	// running follows the event streams of long tasks: each ends with a
	// cancel, or with the death of its engine.
	type stream struct {
		id  string
		evs chan []taskEvent
	}
	submitLong := func(id string) stream {
		t.Helper()
		if code, _, body := f.submit(t, `{"task_id":"`+id+`","prompt":"x","max_tokens":2000,"model_ref":"`+simModel+`"}`); code != http.StatusAccepted {
			t.Fatalf("submit %s: %d %s", id, code, body)
		}
		s := stream{id: id, evs: make(chan []taskEvent, 1)}
		go func() { s.evs <- f.events(t, id) }()
		return s
	}
	cancelTask := func(id string) {
		t.Helper()
		resp, err := http.Post(cpURL+"/v2/tasks/"+id+"/cancel", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var first []stream
	for i := range 4 {
		first = append(first, submitLong(fmt.Sprintf("long-%d", i)))
	}
	t.Cleanup(func() {
		for _, s := range first {
			cancelTask(s.id)
		}
	})

	var seen string
	defer func() {
		if t.Failed() {
			t.Logf("engines last seen: %s", seen)
		}
	}()
	waitFor(t, 5*time.Second, "both replicas' engines serving 2 tasks each", func() bool {
		b0, b1 := busySlots(urls["r0"]), busySlots(urls["r1"])
		seen = fmt.Sprintf("r0 %d busy, %d deferred; r1 %d busy, %d deferred", b0, deferred(urls["r0"]), b1, deferred(urls["r1"]))
		return b0 == 2 && b1 == 2
	})
	// The heartbeat shows both replicas, their URLs and their busy slots.
	waitFor(t, 5*time.Second, "both replicas in the heartbeat", func() bool {
		p, _ := poolState(f.client, "node-1", "pool-0")
		if len(p.Replicas) != 2 || p.SlotsFree != 0 {
			return false
		}
		for i, r := range []string{"r0", "r1"} {
			got := p.Replicas[i]
			if got.ReplicaID != r || got.URL != urls[r] || !got.Ready || got.SlotsTotal != 2 || got.SlotsFree != 0 {
				return false
			}
		}
		return true
	})

	// Placement explains each replica.
	var ex api.Explanation
	if err := json.Unmarshal([]byte(get(t, cpURL+"/v2/placement/explain?model="+simModel)), &ex); err != nil {
		t.Fatal(err)
	}
	explained := map[string]int{}
	for _, c := range ex.Candidates {
		explained[c.NodeID+"/"+c.PoolID+"/"+c.ReplicaID] = c.InFlight
	}
	if len(explained) != 2 || explained["node-1/pool-0/r0"] != 2 || explained["node-1/pool-0/r1"] != 2 {
		t.Fatalf("explained candidates (in flight) = %v, want r0 and r1 with 2 each", explained)
	}

	// One replica dies: its engine is killed, its handoff file removed.
	// Its two streams end with WORKER_RESET; the other replica's two go on.
	engines["r1"].signal(t, syscall.SIGKILL)
	if err := os.Remove(files["r1"]); err != nil {
		t.Fatal(err)
	}
	ended := map[string][]taskEvent{}
	deadline := time.After(10 * time.Second)
	for len(ended) < 2 {
		for _, s := range first {
			if _, done := ended[s.id]; done {
				continue
			}
			select {
			case evs := <-s.evs:
				ended[s.id] = evs
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatalf("the dead replica's streams did not end: %d ended", len(ended))
		case <-time.After(20 * time.Millisecond):
		}
	}
	for id, evs := range ended {
		if last := evs[len(evs)-1]; last.Type != "error" || last.Data["code"] != api.CodeWorkerReset {
			t.Errorf("%s on the dead replica: %s %v", id, types(evs), last.Data)
		}
	}
	if n := busySlots(urls["r0"]); n != 2 {
		t.Errorf("the surviving replica's engine has %d busy slots after its sibling died, want 2", n)
	}
	running := first[:0:0]
	for _, s := range first {
		if _, done := ended[s.id]; !done {
			running = append(running, s)
		}
	}
	if len(running) != 2 {
		t.Fatalf("%d streams still running, want 2", len(running))
	}
	waitFor(t, 10*time.Second, "pool-0 down to r0's 2 slots", func() bool {
		p, ok := poolState(f.client, "node-1", "pool-0")
		return ok && p.Ready && p.SlotsTotal == 2 && len(p.Replicas) == 1 && p.Replicas[0].ReplicaID == "r0"
	})
	if st := poolStatus(t, a.url, "pool-0"); !st.Ready || len(st.Replicas) != 1 || st.Replicas[0].URL != urls["r0"] {
		t.Fatalf("pool status after r1 died: %+v", st)
	}
	// The two tasks on r0 ran on; free its slots for new ones.
	for _, s := range running {
		cancelTask(s.id)
	}
	for _, s := range running {
		select {
		case evs := <-s.evs:
			if last := evs[len(evs)-1]; last.Type != "error" || last.Data["code"] != "CANCELLED" {
				t.Errorf("%s on the surviving replica ended %s %v, want cancelled", s.id, types(evs), last.Data)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's stream did not end", s.id)
		}
	}
	waitFor(t, 5*time.Second, "r0 idle", func() bool { return busySlots(urls["r0"]) == 0 })

	var second []stream
	for i := range 2 {
		second = append(second, submitLong(fmt.Sprintf("after-%d", i)))
	}
	t.Cleanup(func() {
		for _, s := range second {
			cancelTask(s.id)
		}
	})
	waitFor(t, 5*time.Second, "the surviving replica serving the new tasks", func() bool {
		return busySlots(urls["r0"]) == 2
	})
	for _, s := range second {
		// The engine takes a slot before the first token, which starts
		// the task: wait for it, so the cancel below comes after.
		waitFor(t, 5*time.Second, s.id+" streaming", func() bool {
			return strings.Contains(types(eventsSoFar(cpURL, s.id, 200*time.Millisecond)), "started,token")
		})
	}
	for _, s := range second {
		cancelTask(s.id)
		select {
		case evs := <-s.evs:
			if len(evs) < 2 || evs[0].Type != "started" || evs[1].Type != "token" {
				t.Fatalf("%s after r1 died: %s %v", s.id, types(evs), evs)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's stream did not end", s.id)
		}
	}
}
