//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/handoff"
)

// Timings of the fleet under test (the "short intervals").
const (
	heartbeat   = time.Second
	nodeTimeout = 2500 * time.Millisecond
	staleCheck  = 500 * time.Millisecond
	schedSlack  = time.Second // a loaded 2-core CI machine
)

type agentProc struct {
	*proc
	id, url, runtimeDir string
	args                []string
}

func startControlPlane(t *testing.T, port int, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--cloud-profile", "--addr", addr(port),
		"--node-timeout", nodeTimeout.String(), "--stale-check-interval", staleCheck.String()}, extra...)
	cp := start(t, "orchestratord", "orchestratord", args)
	waitHealthy(t, "http://"+addr(port))
	return cp
}

func startAgent(t *testing.T, id string, cpURL string, extra ...string) *agentProc {
	t.Helper()
	port := freePort(t)
	a := &agentProc{id: id, url: "http://" + addr(port), runtimeDir: t.TempDir()}
	a.args = append([]string{"--cloud-profile", "--addr", addr(port), "--node-id", id,
		"--address", a.url, "--orchestratord-url", cpURL, "--runtime-dir", a.runtimeDir,
		"--pools", "pool-0"}, extra...)
	// The heartbeat interval comes from the legacy variable, in seconds, to
	// prove the seed's names work.
	a.proc = start(t, "pool-managerd", id, a.args, "POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS="+strconv.Itoa(int(heartbeat.Seconds())))
	waitHealthy(t, a.url)
	return a
}

func TestFleetLifecycle(t *testing.T) {
	cpPort := freePort(t)
	cpURL := "http://" + addr(cpPort)
	cp := startControlPlane(t, cpPort)
	client := &api.Client{BaseURL: cpURL}

	agents := map[string]*agentProc{}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("node-%d", i)
		agents[id] = startAgent(t, id, cpURL)
	}

	t.Run("all three register", func(t *testing.T) {
		waitFor(t, 5*time.Second, "3 online nodes", func() bool {
			ns := nodes(client, false)
			for id := range agents {
				if ns[id].Status != api.StatusOnline {
					return false
				}
			}
			return len(ns) == 3
		})
		n := nodes(client, false)["node-1"]
		if n.Address != agents["node-1"].url || n.MachineID != "node-1" || n.Capabilities.CPUCores < 1 {
			t.Fatalf("node-1 registered as %+v", n)
		}
	})

	t.Run("handoff file makes a ready pool", func(t *testing.T) {
		a := agents["node-2"]
		_, err := handoff.WriteFile(a.runtimeDir, handoff.Handoff{
			PoolID: "pool-0", ReplicaID: "r0", Engine: "llamacpp", EngineVersion: "b4747",
			URL: "http://127.0.0.1:8081", SlotsTotal: 4, SlotsFree: 4,
			Model: handoff.Model{Path: "/models/stories260K.gguf"},
		})
		if err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, heartbeat+schedSlack, "pool-0 ready on node-2", func() bool {
			for _, p := range nodes(client, false)["node-2"].Pools {
				if p.PoolID == "pool-0" && p.Ready && p.SlotsTotal == 4 && p.SlotsFree == 4 &&
					len(p.Models) == 1 && p.Models[0] == "stories260K.gguf" && p.URL == "http://127.0.0.1:8081" {
					return true
				}
			}
			return false
		})
		t.Logf("handoff write -> pool ready in GET /v2/nodes: %v", took)
		// The other nodes' pools stay not ready.
		if p := nodes(client, false)["node-1"].Pools; len(p) != 1 || p[0].Ready {
			t.Fatalf("node-1 pools = %+v, want one pool not ready", p)
		}
	})

	t.Run("garbage handoff file is skipped and the agent keeps running", func(t *testing.T) {
		a := agents["node-2"]
		if err := os.WriteFile(filepath.Join(a.runtimeDir, "broken.json"), []byte(`{"pool_id": "pool-9",`), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "invalid handoff counted", func() bool {
			// A plain (non-atomic) write shows as create + write: one or two
			// invalid reads, never an ok one.
			m := get(t, a.url+"/metrics")
			return invalidCounted.MatchString(m) && strings.Contains(m, `llorch_handoff_files_processed_total{node_id="node-2",outcome="ok"} 1`+"\n")
		})
		if ps := nodes(client, false)["node-2"].Pools; len(ps) != 1 || !ps[0].Ready {
			t.Fatalf("pools after a broken file = %+v", ps)
		}
	})

	t.Run("stopped node goes offline and recovers", func(t *testing.T) {
		a := agents["node-3"]
		a.signal(t, syscall.SIGSTOP)
		stopped := time.Now()
		waitFor(t, nodeTimeout+staleCheck+schedSlack, "node-3 offline", func() bool {
			return nodes(client, true)["node-3"].Status == api.StatusOffline
		})
		took := time.Since(stopped)
		// It cannot be declared offline before the timeout minus the last
		// heartbeat's head start.
		if took < nodeTimeout-heartbeat {
			t.Fatalf("node-3 offline after %v, earlier than timeout %v - heartbeat %v", took, nodeTimeout, heartbeat)
		}
		t.Logf("SIGSTOP -> offline: %v (bound: timeout %v + check %v)", took, nodeTimeout, staleCheck)
		if _, listed := nodes(client, false)["node-3"]; listed {
			t.Fatal("an offline node is listed without ?status=all")
		}
		for _, id := range []string{"node-1", "node-2"} {
			if st := nodes(client, false)[id].Status; st != api.StatusOnline {
				t.Fatalf("%s is %q while node-3 is stopped", id, st)
			}
		}
		a.signal(t, syscall.SIGCONT)
		took = waitFor(t, heartbeat+schedSlack, "node-3 back online", func() bool {
			return nodes(client, false)["node-3"].Status == api.StatusOnline
		})
		t.Logf("SIGCONT -> online: %v", took)
	})

	t.Run("SIGTERM deregisters and exits 0", func(t *testing.T) {
		a := agents["node-1"]
		a.signal(t, syscall.SIGTERM)
		if code := a.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("node-1 exit code %d, want 0", code)
		}
		if _, ok := nodes(client, true)["node-1"]; ok {
			t.Fatal("node-1 still registered after SIGTERM")
		}
		m := get(t, cpURL+"/metrics")
		for _, want := range []string{
			`llorch_node_status_transitions_total{from="online",to="draining"} 1`,
			`llorch_node_status_transitions_total{from="draining",to="deregistered"} 1`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("control plane metrics lack %s", want)
			}
		}
		delete(agents, "node-1")
	})

	t.Run("control plane restart: every node re-registers within one heartbeat", func(t *testing.T) {
		cp.signal(t, syscall.SIGKILL)
		cp.wait(t, 5*time.Second)
		cp = startControlPlane(t, cpPort)
		up := time.Now()
		waitFor(t, heartbeat+schedSlack, "nodes re-registered", func() bool {
			ns := nodes(client, false)
			return len(ns) == 2 && ns["node-2"].Status == api.StatusOnline && ns["node-3"].Status == api.StatusOnline
		})
		t.Logf("restart -> all nodes re-registered: %v (heartbeat %v)", time.Since(up), heartbeat)
		// Their pool snapshots come back with the first heartbeat.
		waitFor(t, heartbeat+schedSlack, "node-2 pool snapshot", func() bool {
			ps := nodes(client, false)["node-2"].Pools
			return len(ps) == 1 && ps[0].Ready
		})
	})
}

var invalidCounted = regexp.MustCompile(`llorch_handoff_files_processed_total\{node_id="node-2",outcome="invalid"\} [12]\n`)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}
