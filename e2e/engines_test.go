//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/handoff"
)

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func readHandoff(dir, pool string) (handoff.Handoff, bool) {
	h, err := handoff.ReadFile(filepath.Join(dir, pool+"_r0.json"))
	return h, err == nil
}

func poolState(c *api.Client, node, pool string) (api.PoolState, bool) {
	for _, p := range nodes(c, false)[node].Pools {
		if p.PoolID == pool {
			return p, true
		}
	}
	return api.PoolState{}, false
}

func poolStatus(t *testing.T, agentURL, pool string) api.PoolStatus {
	t.Helper()
	var st api.PoolStatus
	if err := json.Unmarshal([]byte(get(t, agentURL+"/pools/"+pool+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestProvisionedSimulatedEngines: pool-managerd launches simulators through
// its provisioner; the pools turn ready in the control plane, a killed
// engine is restarted (not ready in between), SIGTERM drains and stops every
// engine it started.
func TestProvisionedSimulatedEngines(t *testing.T) {
	cpPort := freePort(t)
	cpURL := "http://" + addr(cpPort)
	startControlPlane(t, cpPort)
	client := &api.Client{BaseURL: cpURL}
	a := startAgent(t, "gpu-1", cpURL, "--engine", "sim", "--pools", "pool-a,pool-b",
		"--engine-slots", "2", "--model", "/models/stories260K.gguf")

	var first handoff.Handoff
	took := waitFor(t, 10*time.Second, "both pools ready in the control plane", func() bool {
		pa, okA := poolState(client, "gpu-1", "pool-a")
		pb, okB := poolState(client, "gpu-1", "pool-b")
		return okA && okB && pa.Ready && pb.Ready && pa.SlotsTotal == 2 &&
			len(pa.Models) == 1 && pa.Models[0] == "stories260K.gguf" && pa.EngineVersion == "b0-llorch-sim"
	})
	t.Logf("agent start -> 2 simulated engines ready in GET /v2/nodes: %v", took)
	first, _ = readHandoff(a.runtimeDir, "pool-a")
	if !alive(first.PID) {
		t.Fatalf("engine pid %d in the handoff file is not running", first.PID)
	}
	if get(t, first.URL+"/health") != `{"status":"ok"}` {
		t.Fatal("the announced engine does not answer /health")
	}

	t.Run("killed engine is restarted, pool not ready in between", func(t *testing.T) {
		if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "pool-a not ready", func() bool {
			p, ok := poolState(client, "gpu-1", "pool-a")
			return ok && !p.Ready
		})
		if st := poolStatus(t, a.url, "pool-a"); !strings.Contains(st.LastError, "signal: killed") {
			t.Fatalf("last_error = %q", st.LastError)
		}
		took := waitFor(t, 10*time.Second, "pool-a ready again", func() bool {
			p, ok := poolState(client, "gpu-1", "pool-a")
			return ok && p.Ready
		})
		t.Logf("SIGKILL of the engine -> ready again (backoff 0.5-1 s + start): %v", took)
		if st := poolStatus(t, a.url, "pool-a"); st.LastError != "" {
			t.Errorf("last_error = %q once the engine is ready again, want it cleared", st.LastError)
		}
		second, _ := readHandoff(a.runtimeDir, "pool-a")
		if second.PID == first.PID || !alive(second.PID) {
			t.Fatalf("restarted engine pid %d (was %d)", second.PID, first.PID)
		}
		if m := get(t, a.url+"/metrics"); !strings.Contains(m, `llorch_engine_restarts_total{node_id="gpu-1",pool_id="pool-a"} 1`) {
			t.Fatal("restart not counted")
		}
		first = second
	})

	t.Run("SIGTERM drains, deregisters and stops every engine", func(t *testing.T) {
		b, _ := readHandoff(a.runtimeDir, "pool-b")
		a.signal(t, syscall.SIGTERM)
		if code := a.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, pid := range []int{first.PID, b.PID} {
			if alive(pid) {
				t.Errorf("engine %d outlived its agent", pid)
			}
		}
		if _, ok := nodes(client, true)["gpu-1"]; ok {
			t.Error("gpu-1 still registered")
		}
		for _, pool := range []string{"pool-a", "pool-b"} {
			if _, err := os.Stat(filepath.Join(a.runtimeDir, pool+"_r0.json")); !os.IsNotExist(err) {
				t.Errorf("handoff file of %s left behind: %v", pool, err)
			}
		}
	})
}

// TestCrashingEngineOpensTheBreaker: an engine that cannot start (a flag it
// refuses) is restarted with backoff until the breaker opens; the pool
// says why.
func TestCrashingEngineOpensTheBreaker(t *testing.T) {
	port := freePort(t)
	base := "http://" + addr(port)
	dir := t.TempDir()
	start(t, "pool-managerd", "crasher", []string{"--addr", addr(port), "--runtime-dir", dir, "--node-id", "crasher",
		"--engine", "sim", "--engine-args", "--no-such-flag", "--engine-max-crashes", "3"})
	waitHealthy(t, base)
	waitFor(t, 15*time.Second, "breaker open", func() bool {
		return strings.Contains(get(t, base+"/metrics"), `llorch_engine_breaker_open{node_id="crasher",pool_id="pool-0"} 1`)
	})
	st := poolStatus(t, base, "pool-0")
	if st.Ready || !strings.Contains(st.LastError, "circuit breaker open after 3 crashes") || !strings.Contains(st.LastError, "no-such-flag") {
		t.Fatalf("pool status = %+v", st)
	}
}

// TestRealLlamaServer runs the provisioning path against a real llama-server
// when LLAMA_SERVER names one (opt-in: no GPU or llama.cpp build here).
func TestRealLlamaServer(t *testing.T) {
	bin := os.Getenv("LLAMA_SERVER")
	if bin == "" {
		t.Skip("LLAMA_SERVER is not set: no real llama-server to test against")
	}
	model, err := filepath.Abs("../../shared/models/stories260K.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if m := os.Getenv("MODEL"); m != "" {
		model = m
	}
	port := freePort(t)
	base := "http://" + addr(port)
	dir := t.TempDir()
	p := start(t, "pool-managerd", "real", []string{"--addr", addr(port), "--runtime-dir", dir, "--node-id", "real",
		"--engine", bin, "--model", model, "--engine-slots", "4", "--engine-ctx-size", "1024"})
	waitHealthy(t, base)
	var h handoff.Handoff
	waitFor(t, 2*time.Minute, "llama-server ready", func() (ok bool) { h, ok = readHandoff(dir, "pool-0"); return ok })
	if st := poolStatus(t, base, "pool-0"); !st.Ready || st.SlotsTotal != 4 {
		t.Fatalf("pool status = %+v", st)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 || alive(h.PID) {
		t.Fatalf("exit %d, llama-server alive: %v", code, alive(h.PID))
	}
}
