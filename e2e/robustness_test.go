//go:build e2e

package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/exporter"
)

// TestBadInputNeverStopsTheControlPlane throws malformed, oversized,
// unauthenticated and unknown-node requests at a control plane holding one
// node, and checks each gets its status and the node survives.
func TestBadInputNeverStopsTheControlPlane(t *testing.T) {
	const token = "e2e-secret-token"
	port := freePort(t)
	base := "http://" + addr(port)
	cp := start(t, "orchestratord", "orchestratord", []string{"--cloud-profile", "--addr", addr(port)}, "LLORCH_API_TOKEN="+token)
	waitHealthy(t, base)
	good := &api.Client{BaseURL: base, Token: token}
	startAgent(t, "survivor", base, "--api-token", token)
	waitFor(t, 5*time.Second, "survivor registered", func() bool { return len(nodes(good, false)) == 1 })

	cases := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token", "GET", "/v2/nodes", "", "", 401},
		{"wrong token", "GET", "/v2/nodes", "nope", "", 401},
		{"malformed register", "POST", "/v2/nodes/register", token, `{"node_id":`, 400},
		{"wrong type", "POST", "/v2/nodes/register", token, `{"node_id":7,"address":"http://x:1"}`, 400},
		{"missing address", "POST", "/v2/nodes/register", token, `{"node_id":"x"}`, 400},
		{"oversized", "POST", "/v2/nodes/register", token, `{"node_id":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, 413},
		{"heartbeat unknown node", "POST", "/v2/nodes/ghost/heartbeat", token, `{"pools":[]}`, 404},
		{"malformed heartbeat", "POST", "/v2/nodes/survivor/heartbeat", token, `[1,2`, 400},
		{"bad slots", "POST", "/v2/nodes/survivor/heartbeat", token, `{"pools":[{"pool_id":"p","slots_total":1,"slots_free":5}]}`, 400},
		{"delete unknown", "DELETE", "/v2/nodes/ghost", token, "", 404},
		{"health is open", "GET", "/health", "", "", 200},
		{"metrics are open", "GET", "/metrics", "", "", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, base+tc.path, bytes.NewBufferString(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if resp.Header.Get(api.CorrelationHeader) == "" {
				t.Fatal("no X-Correlation-Id")
			}
		})
	}
	if ns := nodes(good, false); ns["survivor"].Status != api.StatusOnline {
		t.Fatalf("after bad input the fleet is %+v", ns)
	}
	m := get(t, base+"/metrics")
	for _, want := range []string{`llorch_node_registrations_total{outcome="invalid"} 4`, `llorch_node_heartbeats_total{outcome="invalid"} 2`, `llorch_node_heartbeats_total{outcome="unknown_node"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(cp.out.String(), token) {
		t.Fatal("the API token appears in the control plane's log")
	}
	if !strings.Contains(cp.out.String(), "api_token_fingerprint="+api.TokenFingerprint(token)) {
		t.Fatal("the control plane does not log the token's fingerprint")
	}
}

// TestBadConfigurationStopsAtStart checks each daemon refuses a bad setting
// with one line naming the flag and its variable, and exit code 1.
func TestBadConfigurationStopsAtStart(t *testing.T) {
	poolsConfig := filepath.Join(t.TempDir(), "pools.yaml")
	if err := os.WriteFile(poolsConfig, []byte("pools:\n  - id: big\n    engine: sim\n    slotz: 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, binary string
		args, env    []string
		wantLine     []string
	}{
		{"bad duration variable", "orchestratord", []string{"--cloud-profile"}, []string{"ORCHESTRATORD_NODE_TIMEOUT_MS=soon"}, []string{"ORCHESTRATORD_NODE_TIMEOUT_MS", "node-timeout"}},
		{"bad duration flag", "orchestratord", []string{"--stale-check-interval", "-3s"}, nil, []string{"stale-check-interval"}},
		{"non-loopback without token", "orchestratord", []string{"--addr", "0.0.0.0:0"}, nil, []string{"not loopback", "LLORCH_API_TOKEN"}},
		{"cloud agent without address", "pool-managerd", []string{"--cloud-profile", "--orchestratord-url", "http://127.0.0.1:1"}, nil, []string{"--address/POOL_MANAGERD_ADDRESS"}},
		{"cloud agent without control plane", "pool-managerd", []string{"--cloud-profile", "--address", "http://127.0.0.1:1"}, nil, []string{"--orchestratord-url/ORCHESTRATORD_URL"}},
		{"bad watch mode", "pool-managerd", []string{"--watch-mode", "inotify"}, nil, []string{"--watch-mode/POOL_MANAGERD_WATCH_MODE"}},
		{"bad pool id", "pool-managerd", nil, []string{"POOL_MANAGERD_POOLS=ok,no way"}, []string{"POOL_MANAGERD_POOLS"}},
		{"bad heartbeat variable", "pool-managerd", nil, []string{"POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS=x"}, []string{"POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS", "heartbeat-interval"}},
		{"bad duration flag names its variable", "pool-managerd", []string{"--drain-timeout", "soon"}, nil, []string{"--drain-timeout", "POOL_MANAGERD_DRAIN_TIMEOUT_SECS"}},
		{"pools config YAML error names the line", "pool-managerd", []string{"--pools-config", poolsConfig}, nil,
			[]string{"--pools-config/POOL_MANAGERD_POOLS_CONFIG", "YAML: line 4", `unknown key "slotz"`}},
	}
	if !nvmlStarts() {
		// NVML cannot start here (no driver, or no cgo): the agent stops
		// before it listens, in one line.
		cases = append(cases, struct {
			name, binary string
			args, env    []string
			wantLine     []string
		}{"nvml without a driver stops before listening", "pool-managerd", []string{"--gpu-source", "nvml", "--addr", "127.0.0.1:0"}, nil,
			[]string{"--gpu-source/POOL_MANAGERD_GPU_SOURCE nvml", "NVIDIA driver"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.binary == "pool-managerd" {
				args = append(args, "--runtime-dir", t.TempDir())
			}
			p := start(t, tc.binary, tc.binary, args, tc.env...)
			if code := p.wait(t, 10*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1; output:\n%s", code, p.out.String())
			}
			out := strings.TrimSpace(p.out.String())
			if strings.Count(out, "\n") != 0 {
				t.Fatalf("want one line, got:\n%s", out)
			}
			for _, w := range tc.wantLine {
				if !strings.Contains(out, w) {
					t.Fatalf("%q does not name %q", out, w)
				}
			}
		})
	}
}

// TestHomeProfile checks the defaults: no registration, node routes 503 on
// the control plane, the agent serving its pools from the runtime dir.
func TestHomeProfile(t *testing.T) {
	cpPort, agentPort := freePort(t), freePort(t)
	cpBase, agentBase := "http://"+addr(cpPort), "http://"+addr(agentPort)
	start(t, "orchestratord", "orchestratord", []string{"--addr", addr(cpPort)})
	agent := start(t, "pool-managerd", "pool-managerd", []string{"--addr", addr(agentPort), "--runtime-dir", t.TempDir(), "--node-id", "home"})
	waitHealthy(t, cpBase)
	waitHealthy(t, agentBase)
	resp, err := http.Get(cpBase + "/v2/nodes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET /v2/nodes in HOME profile: %d, want 503", resp.StatusCode)
	}
	if st := get(t, agentBase+"/pools/pool-0/status"); !strings.Contains(st, `"pool_id":"pool-0"`) {
		t.Fatalf("pool status: %s", st)
	}
	m := get(t, agentBase+"/metrics")
	if !strings.Contains(m, `llorch_pool_ready{node_id="home",pool_id="pool-0"} 0`) {
		t.Fatalf("agent metrics lack the pool: %s", m)
	}
	if strings.Contains(m, "llorch_heartbeat_sent_total") {
		t.Fatal("a HOME agent exports heartbeat metrics: it must not heartbeat")
	}
	agent.signal(t, syscall.SIGTERM)
	if code := agent.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("HOME agent exit %d on SIGTERM", code)
	}
}

// nvmlStarts reports whether NVML starts on this machine (a driver, and a
// build with cgo).
func nvmlStarts() bool {
	src, err := exporter.OpenNVML()
	if err != nil {
		return false
	}
	_ = src.Close()
	return true
}
