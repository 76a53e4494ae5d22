//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

func needPrometheus(t *testing.T) (prometheus, promtool string) {
	t.Helper()
	p, err1 := exec.LookPath("prometheus")
	pt, err2 := exec.LookPath("promtool")
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus/promtool missing: make test installs Debian's prometheus package")
		}
		t.Skip("prometheus/promtool not installed (apt-get install prometheus)")
	}
	return p, pt
}

// TestShippedPrometheusConfig: deploy/prometheus/prometheus.yml is valid.
func TestShippedPrometheusConfig(t *testing.T) {
	_, promtool := needPrometheus(t)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	data, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The credentials file must exist for promtool; the shipped path is a
	// placeholder.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(data), "/etc/prometheus/llorch-token", token)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

// TestPrometheusDiscoversTheFleetAndFeedsPlacement: a real Prometheus finds
// the agents through /v2/sd and scrapes them; the control plane, started
// with --prometheus-url, places with the utilisation it reads by PromQL.
func TestPrometheusDiscoversTheFleetAndFeedsPlacement(t *testing.T) {
	prometheusBin, _ := needPrometheus(t)
	promPort := freePort(t)
	promURL := "http://" + addr(promPort)
	f := startFleet(t, 2, 2, "50", "--prometheus-url", promURL, "--metrics-interval", "500ms", "--metrics-stale-after", "10s")

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: llorch-agents
    http_sd_configs: [{url: %q, refresh_interval: 1s}]
`, f.url+"/v2/sd")
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, prometheusBin, "prometheus", []string{"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr(promPort)})
	waitFor(t, 30*time.Second, "Prometheus ready", func() bool {
		resp, err := http.Get(promURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	waitFor(t, 30*time.Second, "both agents scraped through /v2/sd", func() bool {
		body := get(t, promURL+"/api/v1/query?query="+`count(up{job="llorch-agents"}==1)`)
		return strings.Contains(body, `"value":[`) && strings.Contains(body, `,"2"]`)
	})
	waitFor(t, 30*time.Second, "placement uses Prometheus' readings", func() bool {
		var ex api.Explanation
		if err := json.Unmarshal([]byte(get(t, f.url+"/v2/placement/explain")), &ex); err != nil || len(ex.Candidates) != 2 {
			return false
		}
		for _, c := range ex.Candidates {
			if c.MetricsAgeMS < 0 {
				return false
			}
		}
		return true
	})
	// A task placed with those readings completes.
	f.submit(t, `{"task_id":"via-prom","prompt":"x","max_tokens":3}`)
	if evs := f.events(t, "via-prom"); evs[len(evs)-1].Type != "end" {
		t.Fatalf("task via PromQL placement: %s", types(evs))
	}
}
