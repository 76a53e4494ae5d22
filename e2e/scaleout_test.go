//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/registry/etcdstore/etcdtest"
)

// Timings of the scaled-out fleet. The node timeout outlasts the embedded
// etcd's Close (up to 7 s, during which it still expires leases), so the
// outage below is a clean stop.
const (
	etcdNodeTimeout = 10 * time.Second
	etcdHeartbeat   = time.Second
)

// TestScaledOut runs three orchestratord replicas on one real etcd
// (embedded in this test process), three node agents that know all three
// replicas, and a steady stream of requests spread over the replicas.
func TestScaledOut(t *testing.T) {
	etcd := etcdtest.Start(t)
	prefix := fmt.Sprintf("/e2e-%d/", time.Now().UnixNano())
	startReplica := func(name string) (*proc, string) {
		port := freePort(t)
		p := start(t, "orchestratord", name, []string{"--cloud-profile", "--addr", addr(port),
			"--registry", "etcd", "--etcd-endpoints", etcd.URL(), "--etcd-prefix", prefix,
			"--node-timeout", etcdNodeTimeout.String(), "--metrics-interval", "500ms"})
		u := "http://" + addr(port)
		waitHealthy(t, u)
		return p, u
	}
	var replicas []*proc
	var urls []string
	for i := range 3 {
		p, u := startReplica(fmt.Sprintf("orchestratord-%d", i))
		replicas, urls = append(replicas, p), append(urls, u)
	}
	agents := map[string]*agentProc{}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("node-%d", i)
		// Each agent lists the replicas from a different one: registrations
		// and heartbeats arrive at all three.
		list := append(append([]string{}, urls[i-1:]...), urls[:i-1]...)
		agents[id] = startAgent(t, id, strings.Join(list, ","), "--engine", "sim", "--model", "/models/"+simModel,
			"--engine-slots", "4", "--engine-args", "--tokens-per-second 400", "--engine-poll-interval", "300ms")
	}
	fleetOn := func(u string, all bool) map[string]api.NodeInfo { return nodes(&api.Client{BaseURL: u}, all) }
	ready := func(u string) int {
		n := 0
		for _, node := range fleetOn(u, false) {
			for _, p := range node.Pools {
				if p.Ready {
					n++
				}
			}
		}
		return n
	}
	for _, u := range urls {
		waitFor(t, 20*time.Second, "3 ready pools on "+u, func() bool { return ready(u) == 3 })
	}

	t.Run("every replica lists the same fleet", func(t *testing.T) {
		want := fleetOn(urls[0], true)
		for _, u := range urls[1:] {
			got := fleetOn(u, true)
			if len(got) != len(want) {
				t.Fatalf("%s lists %d nodes, %s %d", u, len(got), urls[0], len(want))
			}
			for id, n := range want {
				if got[id].Status != n.Status || got[id].Address != n.Address || len(got[id].Pools) != len(n.Pools) {
					t.Errorf("%s: %s is %s at %s with %d pools; %s says %s at %s with %d", u, id, got[id].Status, got[id].Address,
						len(got[id].Pools), urls[0], n.Status, n.Address, len(n.Pools))
				}
			}
		}
	})

	// The load: a request every 50 ms, in turn to each live replica.
	var live atomic.Value
	live.Store(urls)
	var ok, failed atomic.Int64
	var paused atomic.Bool
	// inflightTo is the replica the request in flight went to ("" between
	// requests); picked and set under sendMu, so a test that changes live
	// and then waits on it cannot miss a request picked just before.
	var sendMu sync.Mutex
	inflightTo := ""
	sentTo := func() string { sendMu.Lock(); defer sendMu.Unlock(); return inflightTo }
	var failMu sync.Mutex
	var failures []string
	ctx, stopLoad := context.WithCancel(context.Background())
	var loadDone sync.WaitGroup
	loadDone.Go(func() {
		client := &http.Client{Timeout: 20 * time.Second}
		for i := 0; ctx.Err() == nil; i++ {
			if paused.Load() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			sendMu.Lock()
			targets := live.Load().([]string)
			target := targets[i%len(targets)]
			inflightTo = target
			sendMu.Unlock()
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello %d"}],"max_tokens":8,"stream":true}`, simModel, i)
			resp, err := client.Post(target+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "[DONE]") {
					ok.Add(1)
				} else {
					err = fmt.Errorf("%s: %d %.200s", target, resp.StatusCode, b)
				}
			}
			sendMu.Lock()
			inflightTo = ""
			sendMu.Unlock()
			if err != nil && ctx.Err() == nil {
				failed.Add(1)
				failMu.Lock()
				failures = append(failures, err.Error())
				failMu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { stopLoad(); loadDone.Wait() })
	checkLoad := func(t *testing.T, phase string) {
		t.Helper()
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) > 0 {
			t.Errorf("%s: %d requests failed (%d ok): %v", phase, len(failures), ok.Load(), failures[:min(3, len(failures))])
		}
		failures = nil
	}
	waitFor(t, 10*time.Second, "requests succeeding", func() bool { return ok.Load() >= 20 })
	checkLoad(t, "steady load")

	noneOffline := func(t *testing.T, on []string, d time.Duration, what string) {
		t.Helper()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			for _, u := range on {
				for id, n := range fleetOn(u, true) {
					if n.Status != api.StatusOnline {
						t.Fatalf("%s: %s is %s on %s", what, id, n.Status, u)
					}
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("replicas count each other's tasks", func(t *testing.T) {
		paused.Store(true)
		defer paused.Store(false)
		engine := fleetOn(urls[0], false)["node-1"].Pools[0].URL
		deferred := func() int {
			m := get(t, engine+"/metrics")
			for _, line := range strings.Split(m, "\n") {
				if v, ok := strings.CutPrefix(line, "llamacpp:requests_deferred "); ok {
					n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					if err != nil {
						t.Fatalf("llamacpp:requests_deferred %q: %v", v, err)
					}
					return int(n)
				}
			}
			t.Fatalf("no llamacpp:requests_deferred in %s/metrics", engine)
			return 0
		}
		waitFor(t, 10*time.Second, "node-1 idle", func() bool { return deferred() == 0 })
		submit := func(u, id string) {
			body := fmt.Sprintf(`{"task_id":%q,"prompt":"a long story","max_tokens":1200,"model_ref":%q,"placement":{"mode":"pin","pin_pool_id":"pool-0","node_id":"node-1"}}`, id, simModel)
			resp, err := http.Post(u+"/v2/tasks", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("submit %s to %s: %d %s", id, u, resp.StatusCode, b)
			}
		}
		// maxDeferred watches the engine until its tasks are done: tasks
		// it holds waiting beyond its 4 slots were sent by a replica that
		// did not count another's.
		maxDeferred := func(d time.Duration) int {
			most := 0
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				most = max(most, deferred())
			}
			return most
		}
		run := fmt.Sprint(time.Now().UnixNano())
		// Replica 1 fills node-1's four slots; replica 2 sends four more
		// 300 ms later, well before any heartbeat reports them.
		for i := range 4 {
			submit(urls[1], fmt.Sprintf("peers-a-%s-%d", run, i))
		}
		time.Sleep(300 * time.Millisecond)
		for i := range 4 {
			submit(urls[2], fmt.Sprintf("peers-b-%s-%d", run, i))
		}
		if most := maxDeferred(4 * time.Second); most != 0 {
			t.Errorf("node-1's engine held %d tasks waiting: replica 2 sent them onto replica 1's slots", most)
		}
		waitFor(t, 20*time.Second, "node-1 idle again", func() bool { return deferred() == 0 })
		// The same at once: what over-commit remains when both replicas
		// send within the publication delay (measured, not asserted).
		waitFor(t, 15*time.Second, "node-1's slots free", func() bool {
			n := fleetOn(urls[1], false)["node-1"]
			return len(n.Pools) > 0 && n.Pools[0].SlotsFree == n.Pools[0].SlotsTotal
		})
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() { submit(urls[1], fmt.Sprintf("peers-c-%s-%d", run, i)) })
			wg.Go(func() { submit(urls[2], fmt.Sprintf("peers-d-%s-%d", run, i)) })
		}
		wg.Wait()
		t.Logf("over-commit with both replicas sending at the same moment: %d of 8 tasks waited in the engine beyond its 4 slots", maxDeferred(3*time.Second))
	})

	t.Run("SIGKILL of a replica loses no node", func(t *testing.T) {
		live.Store(urls[1:])
		waitFor(t, 10*time.Second, "no request in flight to replica 0", func() bool { return sentTo() != urls[0] })
		replicas[0].signal(t, syscall.SIGKILL)
		replicas[0].wait(t, 5*time.Second)
		failMu.Lock()
		failures = nil // a request on its way to the killed replica may fail: it is not the survivors'
		failMu.Unlock()
		before := ok.Load()
		// Longer than the node timeout: node-1, which listed replica 0
		// first, moved on without going offline.
		noneOffline(t, urls[1:], etcdNodeTimeout+2*time.Second, "after the kill")
		if ok.Load()-before < 50 {
			t.Errorf("only %d requests succeeded through the survivors in %v", ok.Load()-before, etcdNodeTimeout)
		}
		checkLoad(t, "through the survivors")
	})

	t.Run("a frozen agent goes offline everywhere and comes back", func(t *testing.T) {
		a := agents["node-2"]
		a.signal(t, syscall.SIGSTOP)
		frozen := time.Now()
		for _, u := range urls[1:] {
			waitFor(t, etcdNodeTimeout+3*time.Second, "node-2 offline on "+u, func() bool { return fleetOn(u, true)["node-2"].Status == api.StatusOffline })
		}
		if took := time.Since(frozen); took < etcdNodeTimeout-etcdHeartbeat {
			t.Errorf("node-2 offline %v after SIGSTOP, before the %v timeout", took, etcdNodeTimeout)
		}
		for id, n := range fleetOn(urls[1], true) {
			if id != "node-2" && n.Status != api.StatusOnline {
				t.Errorf("%s is %s while only node-2 is frozen", id, n.Status)
			}
		}
		a.signal(t, syscall.SIGCONT)
		for _, u := range urls[1:] {
			waitFor(t, 3*etcdHeartbeat+2*time.Second, "node-2 back on "+u, func() bool { return fleetOn(u, true)["node-2"].Status == api.StatusOnline })
		}
		checkLoad(t, "around the frozen agent")
	})

	t.Run("etcd stopped for 10 s marks no node offline", func(t *testing.T) {
		etcd.Stop()
		health := func(u string) api.Health {
			var h api.Health
			_ = getJSON(u+"/health", &h)
			return h
		}
		waitFor(t, 10*time.Second, "replicas report etcd down", func() bool { return health(urls[1]).Status == "degraded" })
		if m := get(t, urls[1]+"/metrics"); !strings.Contains(m, "\nllorch_registry_etcd_up 0\n") {
			t.Errorf("etcd down, but /metrics does not say llorch_registry_etcd_up 0")
		}
		noneOffline(t, urls[1:], 10*time.Second, "etcd down")
		etcd.Start()
		for _, u := range urls[1:] {
			waitFor(t, 15*time.Second, u+" healthy again", func() bool { return health(u).Status == "ok" })
		}
		noneOffline(t, urls[1:], 3*time.Second, "etcd back")
		m := get(t, urls[2]+"/metrics")
		for _, want := range []string{"\nllorch_registry_etcd_up 1\n", `llorch_registry_etcd_writes_total{outcome="ok"}`,
			"llorch_registry_etcd_watch_events_total", "llorch_registry_etcd_write_duration_seconds_bucket"} {
			if !strings.Contains(m, want) {
				t.Errorf("etcd back: /metrics of %s lacks %q", urls[2], strings.TrimSpace(want))
			}
		}
		checkLoad(t, "through the etcd outage")
	})

	t.Run("a replica started late has the fleet at once", func(t *testing.T) {
		_, u := startReplica("orchestratord-late")
		began := time.Now()
		took := waitFor(t, etcdHeartbeat, "3 ready pools on the late replica", func() bool { return ready(u) == 3 })
		t.Logf("late replica: full fleet %v after /health (%v since it was ready)", took, time.Since(began))
	})
}
