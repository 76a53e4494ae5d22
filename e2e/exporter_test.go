//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"github.com/llorch/llorch/promtext"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

// simH200Bytes is one GPU of --sim-gpus 2xH200:141GiB.
const simH200Bytes = 141 << 30 // 151397597184

// metricValue reads one series of a /metrics text: the first series of
// name whose labels include want.
func metricValue(text, name string, want map[string]string) (float64, bool) {
	fams, err := promtext.Parse(strings.NewReader(text))
	if err != nil || fams[name] == nil {
		return 0, false
	}
series:
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue series
			}
		}
		return promtext.Value(m), true
	}
	return 0, false
}

// promtool finds promtool. `make test` installs it, so CI must have it;
// elsewhere ok is false when it is missing.
func promtool(t *testing.T) (path string, ok bool) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found; CI must have it (apt-get install prometheus)")
		}
		return "", false
	}
	return path, true
}

// promtoolCheck saves a /metrics text to a file and runs `promtool check
// metrics` on it. Any problem fails the test.
func promtoolCheck(t *testing.T, tool, text string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "metrics.prom")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, &out, &out
	err = cmd.Run()
	if err == nil {
		return
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("run promtool: %v", err)
	}
	t.Fatalf("promtool check metrics exited %d:\n%s\n(metrics in %s)", exit.ExitCode(), out.String(), file)
}

// TestExporterPromtoolCheckMetrics: an agent simulating 2 H200s and
// running a simulated engine exports GPU, pool and engine metrics that
// promtool accepts.
func TestExporterPromtoolCheckMetrics(t *testing.T) {
	tool, ok := promtool(t)
	if !ok {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	port := freePort(t)
	base := "http://" + addr(port)
	start(t, "pool-managerd", "sim-gpus", []string{"--addr", addr(port), "--node-id", "sim-gpus", "--runtime-dir", t.TempDir(),
		"--gpu-source", "sim", "--sim-gpus", "2xH200:141GiB", "--engine", "sim", "--pools", "pool-0",
		"--gpu-poll-interval", "200ms", "--engine-poll-interval", "200ms"})
	waitHealthy(t, base)

	var text string
	waitFor(t, 20*time.Second, "GPU source up and the engine scraped", func() bool {
		text = get(t, base+"/metrics")
		up, ok1 := metricValue(text, "llorch_gpu_source_up", map[string]string{"node_id": "sim-gpus", "source": "sim"})
		scraped, ok2 := metricValue(text, "llorch_pool_engine_scrape_up", map[string]string{"node_id": "sim-gpus", "pool_id": "pool-0"})
		used, ok3 := metricValue(text, "llorch_gpu_memory_used_bytes", map[string]string{"node_id": "sim-gpus", "gpu": "1"})
		// The engine's memory shows on the simulated GPUs once its pool is
		// ready.
		return ok1 && ok2 && ok3 && up == 1 && scraped == 1 && used > 0
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"llorch_gpu_memory_total_bytes", map[string]string{"gpu": "0"}, simH200Bytes},
		{"llorch_pool_vram_total_bytes", map[string]string{"pool_id": "pool-0"}, 2 * simH200Bytes},
		{"llorch_pool_ready", map[string]string{"pool_id": "pool-0"}, 1},
		{"llorch_scrape_collector_success", map[string]string{"collector": "gpu"}, 1},
		{"llorch_scrape_collector_success", map[string]string{"collector": "pools"}, 1},
		{"llorch_scrape_collector_success", map[string]string{"collector": "engine"}, 1},
	} {
		if got, ok := metricValue(text, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if !strings.Contains(text, `model="NVIDIA H200 (simulated)"`) {
		t.Error("no simulated H200 in the GPU labels")
	}

	promtoolCheck(t, tool, text)
}

// TestExporterGPUSourceAutoWithoutGPU: --gpu-source auto on a machine
// without NVML or dcgm-exporter reports the GPU source down and serves its
// pools as ever.
func TestExporterGPUSourceAutoWithoutGPU(t *testing.T) {
	cpPort := freePort(t)
	startControlPlane(t, cpPort)
	a := startAgent(t, "no-gpu", "http://"+addr(cpPort), "--gpu-source", "auto")

	var text, source string
	waitFor(t, 10*time.Second, "llorch_gpu_source_up", func() bool {
		text = get(t, a.url+"/metrics")
		for _, s := range []string{"none", "nvml", "dcgm"} {
			if _, ok := metricValue(text, "llorch_gpu_source_up", map[string]string{"node_id": "no-gpu", "source": s}); ok {
				source = s
				return true
			}
		}
		return false
	})
	if up, _ := metricValue(text, "llorch_gpu_source_up", map[string]string{"source": source}); up == 1 {
		t.Skipf("this machine has a GPU: --gpu-source auto chose %s", source)
	}
	if source != "none" {
		t.Errorf("auto chose %q without a GPU, want none", source)
	}
	// No GPU source is no failure of the collector, and no readings.
	if success, _ := metricValue(text, "llorch_scrape_collector_success", map[string]string{"collector": "gpu"}); success != 1 {
		t.Errorf("gpu collector success %v, want 1", success)
	}
	if _, ok := metricValue(text, "llorch_gpu_memory_total_bytes", nil); ok {
		t.Error("GPU memory exported without a GPU source")
	}
	if _, ok := metricValue(text, "llorch_pool_ready", map[string]string{"pool_id": "pool-0"}); !ok {
		t.Error("pool-0 not exported")
	}
	if st := poolStatus(t, a.url, "pool-0"); st.PoolID != "pool-0" {
		t.Errorf("pool status = %+v", st)
	}
}

// TestExporterSimGPUsInTheRegistry: a cloud agent simulating 2 H200s
// registers them and heartbeats their free memory and each pool's VRAM.
func TestExporterSimGPUsInTheRegistry(t *testing.T) {
	cpPort := freePort(t)
	cpURL := "http://" + addr(cpPort)
	startControlPlane(t, cpPort)
	client := &api.Client{BaseURL: cpURL}
	a := startAgent(t, "sim-h200", cpURL, "--gpu-source", "sim", "--sim-gpus", "2xH200:141GiB")

	var n api.NodeInfo
	waitFor(t, heartbeat+5*time.Second, "GPUs and pool VRAM in GET /v2/nodes", func() bool {
		n = nodes(client, false)["sim-h200"]
		return len(n.Capabilities.GPUs) == 2 && len(n.GPUs) == 2 && len(n.Pools) == 1 && n.Pools[0].VRAMTotalBytes > 0
	})
	for i, g := range n.Capabilities.GPUs {
		if g.DeviceID != i || g.VRAMTotalBytes != simH200Bytes || !strings.Contains(g.Name, "H200") || g.UUID == "" {
			t.Errorf("capabilities.gpus[%d] = %+v", i, g)
		}
	}
	if n.Capabilities.GPUs[0].UUID == n.Capabilities.GPUs[1].UUID {
		t.Error("both GPUs have one UUID")
	}
	var free uint64
	for i, g := range n.GPUs {
		if g.DeviceID != i || g.VRAMFreeBytes == 0 || g.VRAMFreeBytes >= simH200Bytes {
			t.Errorf("heartbeat gpus[%d] = %+v", i, g)
		}
		free += g.VRAMFreeBytes
	}
	p := n.Pools[0]
	if p.PoolID != "pool-0" || p.VRAMTotalBytes != 2*simH200Bytes || p.VRAMFreeBytes != free {
		t.Errorf("pool = %+v, want vram_total_bytes %d and vram_free_bytes %d (both GPUs)", p, uint64(2*simH200Bytes), free)
	}
	// A cloud agent's metrics (registration, heartbeats) pass promtool too.
	if tool, ok := promtool(t); ok {
		promtoolCheck(t, tool, get(t, a.url+"/metrics"))
	}
}
