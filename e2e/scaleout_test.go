//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	var failMu sync.Mutex
	var failures []string
	ctx, stopLoad := context.WithCancel(context.Background())
	var loadDone sync.WaitGroup
	loadDone.Go(func() {
		client := &http.Client{Timeout: 20 * time.Second}
		for i := 0; ctx.Err() == nil; i++ {
			targets := live.Load().([]string)
			target := targets[i%len(targets)]
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

	t.Run("SIGKILL of a replica loses no node", func(t *testing.T) {
		live.Store(urls[1:])
		time.Sleep(200 * time.Millisecond) // let requests already sent to replica 0 end
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
