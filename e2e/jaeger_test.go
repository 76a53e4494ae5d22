//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jaegerBinary finds Jaeger: $LLORCH_JAEGER (make test-e2e sets it), the
// repo's .tools, or PATH.
func jaegerBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("LLORCH_JAEGER"), "../.tools/jaeger"} {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	if p, err := exec.LookPath("jaeger"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("jaeger missing: make test-e2e installs it into .tools")
	}
	t.Skip("jaeger not installed (make tools)")
	return ""
}

type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		Tags          []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func (tr jaegerTrace) services() map[string]bool {
	out := map[string]bool{}
	for _, s := range tr.Spans {
		out[tr.Processes[s.ProcessID].ServiceName] = true
	}
	return out
}

func (tr jaegerTrace) ops() map[string]bool {
	out := map[string]bool{}
	for _, s := range tr.Spans {
		out[s.OperationName] = true
	}
	return out
}

// TestJaeger sends the daemons' traces to a real Jaeger and reads them back
// the way an operator would: a task's trace holds its POST /v2/tasks,
// placement (with score components) and stream spans; a heartbeat's trace
// crosses from pool-managerd to orchestratord.
func TestJaeger(t *testing.T) {
	bin := jaegerBinary(t)
	otlp, query, health, queryGRPC := freePort(t), freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}}
extensions:
  healthcheckv2: {use_v2: true, http: {endpoint: "%[1]s"}}
  jaeger_query: {storage: {traces: mem}, http: {endpoint: "%[2]s"}, grpc: {endpoint: "%[3]s"}}
  jaeger_storage: {backends: {mem: {memory: {max_traces: 10000}}}}
receivers:
  otlp: {protocols: {http: {endpoint: "%[4]s"}}}
processors:
  batch: {timeout: 100ms}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
`, addr(health), addr(query), addr(queryGRPC), addr(otlp))
	if err := os.WriteFile(filepath.Join(dir, "jaeger.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, bin, "jaeger", []string{"--config", filepath.Join(dir, "jaeger.yaml")})
	jaegerURL := "http://" + addr(query)
	waitFor(t, 30*time.Second, "jaeger healthy", func() bool {
		resp, err := http.Get("http://" + addr(health) + "/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + addr(otlp), "OTEL_BSP_SCHEDULE_DELAY=100"}
	port := freePort(t)
	cpURL := "http://" + addr(port)
	start(t, "orchestratord", "orchestratord", []string{"--cloud-profile", "--addr", addr(port)}, env...)
	waitHealthy(t, cpURL)
	agentPort := freePort(t)
	start(t, "pool-managerd", "jaeger-node", []string{"--cloud-profile", "--addr", addr(agentPort), "--node-id", "jaeger-node",
		"--address", "http://" + addr(agentPort), "--orchestratord-url", cpURL, "--runtime-dir", t.TempDir(),
		"--heartbeat-interval", "1s", "--engine", "sim"}, env...)
	f := &fleet{url: cpURL, client: nil}
	waitFor(t, 10*time.Second, "the agent's pool ready", func() bool {
		return strings.Contains(get(t, cpURL+"/v1/models"), `"id":`)
	})
	if code, _, body := f.submit(t, `{"task_id":"jaeger-task","prompt":"Once upon a time","max_tokens":4}`); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	f.events(t, "jaeger-task")

	traces := func(service, operation string) []jaegerTrace {
		q := url.Values{"service": {service}, "operation": {operation}, "limit": {"50"}, "lookback": {"1h"}}
		var out struct {
			Data []jaegerTrace `json:"data"`
		}
		if err := json.Unmarshal([]byte(get(t, jaegerURL+"/api/traces?"+q.Encode())), &out); err != nil {
			return nil
		}
		return out.Data
	}

	var task jaegerTrace
	waitFor(t, 20*time.Second, "the task's trace in Jaeger", func() bool {
		for _, tr := range traces("orchestratord", "POST /v2/tasks") {
			if tr.ops()["placement"] && tr.ops()["stream"] {
				task = tr
				return true
			}
		}
		return false
	})
	for _, s := range task.Spans {
		if s.OperationName != "placement" {
			continue
		}
		tags := map[string]any{}
		for _, tg := range s.Tags {
			tags[tg.Key] = tg.Value
		}
		for _, k := range []string{"llorch.placed.node_id", "llorch.placed.score", "llorch.placed.score.expected-latency", "llorch.placed.expected_ttft_ms", "llorch.task_id"} {
			if tags[k] == nil {
				t.Errorf("placement span lacks %s (tags %v)", k, tags)
			}
		}
		if tags["llorch.placed.node_id"] != "jaeger-node" {
			t.Errorf("placement span says node %v", tags["llorch.placed.node_id"])
		}
	}

	waitFor(t, 20*time.Second, "a heartbeat trace across both services", func() bool {
		for _, tr := range traces("pool-managerd", "heartbeat") {
			if svcs := tr.services(); svcs["pool-managerd"] && svcs["orchestratord"] && tr.ops()["POST /v2/nodes/{id}/heartbeat"] {
				return true
			}
		}
		return false
	})
	var services struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(get(t, jaegerURL+"/api/services")), &services); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(services.Data, ","); !strings.Contains(got, "orchestratord") || !strings.Contains(got, "pool-managerd") {
		t.Fatalf("Jaeger services: %s", got)
	}
	// No operation is named after a raw path: names stay few.
	var ops struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(get(t, jaegerURL+"/api/services/orchestratord/operations")), &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops.Data {
		if strings.Contains(op, "jaeger-node") || strings.Contains(op, "jaeger-task") {
			t.Errorf("operation named after a raw path: %q", op)
		}
	}
	t.Logf("orchestratord operations in Jaeger: %v", ops.Data)
}
