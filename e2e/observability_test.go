//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dashboards"
	"github.com/llorch/llorch/loadgen"
	"github.com/llorch/llorch/promtext"
)

// The observability pack, end to end: the SHIPPED configurations of
// deploy/ (Prometheus, Alertmanager, Jaeger, Grafana provisioning), the
// rules of alerts/ and the dashboards of dashboards/, against a real fleet
// with an API token, simulated engines and simulated GPUs under a steady
// streamed load. Only ports and paths of the shipped files are changed:
// Prometheus keeps its 15 s scrape and evaluation intervals, so the test
// takes about two minutes; every wait is a wait for a condition with a
// deadline derived from those intervals.

// obsToken is the fleet's API token: every real fleet has one, and the
// discovery route needs it (as a Bearer token).
const obsToken = "e2e-observability-token"

// unqueriedPanelMetrics are the metrics a dashboard panel may read that
// exist only in another configuration than this test's; a panel target
// that reads one of them may return nothing here. Keep it short.
var unqueriedPanelMetrics = map[string]string{
	// The control plane exports it only with --prometheus-url, which
	// replaces the embedded scraper whose llorch_utilization_scrape_up and
	// llorch_utilization_scrape_failures_total the same dashboard reads;
	// the test runs the default (scraper) configuration, so those are
	// checked and this one is not.
	"llorch_utilization_promql_up": "exported only with --prometheus-url (then the scraper's series are absent instead)",
}

// configDependentMetrics are documented in docs/metrics.md but absent from
// both daemons' /metrics with sim GPUs, sim engines, the cloud profile and
// load.
var configDependentMetrics = map[string]string{
	"llorch_utilization_promql_up":         "only with orchestratord --prometheus-url",
	"llorch_gpu_process_memory_used_bytes": "only where NVML reports per-process memory (real NVIDIA GPUs)",
	// TestScaledOut checks these on replicas running --registry etcd.
	"llorch_registry_etcd_up":                     "only with orchestratord --registry etcd",
	"llorch_registry_etcd_pending_writes":         "only with orchestratord --registry etcd",
	"llorch_registry_etcd_writes_total":           "only with orchestratord --registry etcd",
	"llorch_registry_etcd_write_duration_seconds": "only with orchestratord --registry etcd",
	"llorch_registry_etcd_watch_events_total":     "only with orchestratord --registry etcd",
}

// TestObservabilityShippedConfigs checks the files an operator copies
// without running anything: Alertmanager's configuration and Grafana's
// provisioning against the dashboards.
func TestObservabilityShippedConfigs(t *testing.T) {
	t.Run("amtool check-config", func(t *testing.T) {
		amtool, err := exec.LookPath("amtool")
		if err != nil {
			t.Skip("amtool not installed (make promtool installs Debian's prometheus-alertmanager)")
		}
		out, err := exec.Command(amtool, "check-config", "../deploy/alertmanager/alertmanager.yml").CombinedOutput()
		if err != nil {
			t.Fatalf("amtool check-config deploy/alertmanager/alertmanager.yml: %v\n%s", err, out)
		}
	})

	t.Run("grafana provisioning matches the dashboards", func(t *testing.T) {
		var ds struct {
			APIVersion  int `json:"apiVersion"`
			Datasources []struct {
				Name      string `json:"name"`
				UID       string `json:"uid"`
				Type      string `json:"type"`
				URL       string `json:"url"`
				IsDefault bool   `json:"isDefault"`
				JSONData  struct {
					TimeInterval                string `json:"timeInterval"`
					ExemplarTraceIDDestinations []struct {
						Name          string `json:"name"`
						DatasourceUID string `json:"datasourceUid"`
					} `json:"exemplarTraceIdDestinations"`
				} `json:"jsonData"`
			} `json:"datasources"`
		}
		readYAML(t, "../deploy/grafana/provisioning/datasources/llorch.yml", &ds)
		var prov struct {
			APIVersion int `json:"apiVersion"`
			Providers  []struct {
				Name    string `json:"name"`
				Type    string `json:"type"`
				Options struct {
					Path string `json:"path"`
				} `json:"options"`
			} `json:"providers"`
		}
		readYAML(t, "../deploy/grafana/provisioning/dashboards/llorch.yml", &prov)
		if ds.APIVersion != 1 || prov.APIVersion != 1 {
			t.Errorf("apiVersion: datasources %d, dashboards %d, want 1", ds.APIVersion, prov.APIVersion)
		}
		if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path == "" {
			t.Errorf("dashboard provider: %+v, want one file provider with a path", prov.Providers)
		}

		uids := map[string]string{} // uid -> type
		var promUID, jaegerUID string
		for _, d := range ds.Datasources {
			if d.UID == "" || uids[d.UID] != "" {
				t.Errorf("datasource %q: uid %q missing or repeated", d.Name, d.UID)
			}
			uids[d.UID] = d.Type
			switch d.Type {
			case "prometheus":
				promUID = d.UID
				// The dashboards' datasource variable starts on the default
				// datasource of its type.
				if !d.IsDefault {
					t.Errorf("the Prometheus datasource %q is not the default: the dashboards' ${datasource} would not start on it", d.Name)
				}
				if len(d.JSONData.ExemplarTraceIDDestinations) == 0 {
					t.Errorf("the Prometheus datasource links no exemplar to a trace")
				}
				for _, x := range d.JSONData.ExemplarTraceIDDestinations {
					// trace_id is the exemplar label the daemons attach
					// (dispatch.observe); the live test sees it.
					if x.Name != "trace_id" {
						t.Errorf("exemplar link reads label %q, the daemons attach trace_id", x.Name)
					}
					jaegerUID = x.DatasourceUID
				}
				if d.JSONData.TimeInterval != "" {
					iv, err := model.ParseDuration(d.JSONData.TimeInterval)
					if want := shippedPrometheus(t).scrape; err != nil || time.Duration(iv) != want {
						t.Errorf("timeInterval %q: want the shipped scrape interval %v ($__rate_interval is 4 times it)", d.JSONData.TimeInterval, want)
					}
				}
			}
		}
		if promUID == "" {
			t.Fatal("no Prometheus datasource provisioned")
		}
		if jaegerUID == "" || uids[jaegerUID] != "jaeger" {
			t.Errorf("the exemplar link's datasourceUid %q is not a provisioned Jaeger datasource (%v)", jaegerUID, uids)
		}

		// Every dashboard selects its Prometheus with a datasource
		// variable of type prometheus, and every panel and target reads
		// ${datasource}: no uid of some other Grafana is baked in.
		files, _ := filepath.Glob("../dashboards/*.json")
		if len(files) != 4 {
			t.Fatalf("dashboards/*.json: %v, want 4", files)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var d struct {
				UID        string `json:"uid"`
				Templating struct {
					List []struct {
						Name  string `json:"name"`
						Type  string `json:"type"`
						Query any    `json:"query"`
					} `json:"list"`
				} `json:"templating"`
			}
			if err := json.Unmarshal(data, &d); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			found := false
			for _, v := range d.Templating.List {
				if v.Name == "datasource" {
					found = v.Type == "datasource" && v.Query == "prometheus"
				}
			}
			if !found {
				t.Errorf("%s (%s): no datasource variable of type prometheus", f, d.UID)
			}
			var generic any
			_ = json.Unmarshal(data, &generic)
			walkDatasources(generic, func(ref map[string]any) {
				if ref["uid"] != "${datasource}" || ref["type"] != "prometheus" {
					t.Errorf("%s (%s): datasource reference %v, want {type: prometheus, uid: ${datasource}}", f, d.UID, ref)
				}
			})
		}
		qs, err := dashboards.Queries()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(qs, func(q dashboards.Query) bool { return q.Exemplars }) {
			t.Error("no dashboard panel shows exemplars: nothing links to Jaeger")
		}
	})
}

func walkDatasources(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["datasource"].(map[string]any); ok {
			fn(ref)
		}
		for _, x := range v {
			walkDatasources(x, fn)
		}
	case []any:
		for _, x := range v {
			walkDatasources(x, fn)
		}
	}
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// promIntervals are the shipped prometheus.yml's global intervals.
type promIntervals struct{ scrape, eval time.Duration }

func shippedPrometheus(t *testing.T) promIntervals {
	t.Helper()
	var cfg struct {
		Global struct {
			Scrape string `json:"scrape_interval"`
			Eval   string `json:"evaluation_interval"`
		} `json:"global"`
	}
	readYAML(t, "../deploy/prometheus/prometheus.yml", &cfg)
	s, err1 := model.ParseDuration(cfg.Global.Scrape)
	e, err2 := model.ParseDuration(cfg.Global.Eval)
	if err1 != nil || err2 != nil {
		t.Fatalf("shipped prometheus.yml global intervals %q, %q", cfg.Global.Scrape, cfg.Global.Eval)
	}
	return promIntervals{time.Duration(s), time.Duration(e)}
}

// ruleFile is a Prometheus rules file.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record string            `json:"record"`
			Alert  string            `json:"alert"`
			Expr   string            `json:"expr"`
			For    string            `json:"for"`
			Labels map[string]string `json:"labels"`
		} `json:"rules"`
	} `json:"groups"`
}

// substitute replaces each old string (which must occur) with its new one.
func substitute(t *testing.T, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("the shipped file no longer contains %q: update the test", pairs[i])
		}
		text = strings.ReplaceAll(text, pairs[i], pairs[i+1])
	}
	return text
}

// prom is a Prometheus HTTP API client.
type prom struct{ base string }

var promHTTP = &http.Client{Timeout: 10 * time.Second}

func (p prom) get(path string, params url.Values, out any) error {
	u := p.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := promHTTP.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %d %.200s", u, resp.StatusCode, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s", u, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// series runs expr, instant or over the last span, and returns the
// label sets of its result.
func (p prom) series(expr string, instant bool, span, step time.Duration) ([]map[string]string, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	now := time.Now()
	var err error
	if instant {
		err = p.get("/api/v1/query", url.Values{"query": {expr}, "time": {unix(now)}}, &data)
	} else {
		err = p.get("/api/v1/query_range", url.Values{"query": {expr}, "start": {unix(now.Add(-span))}, "end": {unix(now)},
			"step": {strconv.Itoa(int(step.Seconds()))}}, &data)
	}
	if err != nil {
		return nil, err
	}
	if data.ResultType != "vector" && data.ResultType != "matrix" {
		return []map[string]string{{}}, nil // a scalar or string is one value
	}
	var res []struct {
		Metric map[string]string `json:"metric"`
	}
	if err := json.Unmarshal(data.Result, &res); err != nil {
		return nil, err
	}
	out := make([]map[string]string, len(res))
	for i, r := range res {
		out[i] = r.Metric
	}
	return out, nil
}

func unix(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64) }

type promTarget struct {
	Labels           map[string]string `json:"labels"`
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	ScrapePool       string            `json:"scrapePool"`
	Health           string            `json:"health"`
	LastError        string            `json:"lastError"`
}

func (p prom) targets() []promTarget {
	var data struct {
		Active []promTarget `json:"activeTargets"`
	}
	if err := p.get("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return nil
	}
	return data.Active
}

type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"`
	ActiveAt time.Time         `json:"activeAt"`
}

func (p prom) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.get("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// alert returns the alert named name for node, if Prometheus has it
// (pending or firing).
func (p prom) alert(name, node string) (promAlert, bool) {
	as, err := p.alerts()
	if err != nil {
		return promAlert{}, false
	}
	for _, a := range as {
		if a.Labels["alertname"] == name && a.Labels["node_id"] == node {
			return a, true
		}
	}
	return promAlert{}, false
}

// labelValuesRE parses a Grafana template variable's query.
var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// TestObservabilityPack runs the shipped observability configuration
// against a live fleet.
func TestObservabilityPack(t *testing.T) {
	prometheusBin, _ := needPrometheus(t)
	promtoolBin, _ := promtool(t)
	jaegerBin := jaegerBinary(t)
	begin := time.Now()
	top := t // processes started in subtests that outlive them
	iv := shippedPrometheus(t)
	const nodeTimeout, staleCheck = 6 * time.Second, time.Second
	dir := t.TempDir()

	// The rules as Prometheus loads them: a copy of alerts/*.yml.
	rulesDir := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ruleFiles, _ := filepath.Glob("../alerts/*.yml")
	if len(ruleFiles) == 0 {
		t.Fatal("no alerts/*.yml")
	}
	var records []string
	var offlineFor time.Duration
	for _, f := range ruleFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rulesDir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		var rf ruleFile
		if err := yaml.Unmarshal(data, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					records = append(records, r.Record)
				}
				if r.Alert == "LlorchNodeOffline" {
					d, err := model.ParseDuration(r.For)
					if err != nil {
						t.Fatalf("LlorchNodeOffline for %q: %v", r.For, err)
					}
					offlineFor = time.Duration(d)
				}
			}
		}
	}
	if offlineFor == 0 || len(records) == 0 {
		t.Fatalf("alerts/: LlorchNodeOffline's for %v, %d recording rules", offlineFor, len(records))
	}

	// Jaeger, with the shipped configuration on free ports.
	jOTLP, jQuery, jGRPC, jHealth := freePort(t), freePort(t), freePort(t), freePort(t)
	jcfg, err := os.ReadFile("../deploy/jaeger/jaeger.yaml")
	if err != nil {
		t.Fatal(err)
	}
	jpath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(jpath, []byte(substitute(t, string(jcfg),
		"0.0.0.0:4318", addr(jOTLP), "0.0.0.0:16686", addr(jQuery), "0.0.0.0:16685", addr(jGRPC), "0.0.0.0:13133", addr(jHealth))), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, jaegerBin, "jaeger", []string{"--config", jpath})
	jaegerURL := "http://" + addr(jQuery)
	waitFor(t, 30*time.Second, "Jaeger healthy", func() bool { return httpOK("http://" + addr(jHealth) + "/status") })

	// The fleet: a control plane with a token and three node agents, each
	// with a simulated engine on two simulated H200s, tracing to Jaeger.
	env := []string{"LLORCH_API_TOKEN=" + obsToken, "OTEL_EXPORTER_OTLP_ENDPOINT=http://" + addr(jOTLP)}
	cpPort := freePort(t)
	cpURL := "http://" + addr(cpPort)
	start(t, "orchestratord", "orchestratord", []string{"--cloud-profile", "--addr", addr(cpPort),
		"--node-timeout", nodeTimeout.String(), "--stale-check-interval", staleCheck.String()}, env...)
	waitHealthy(t, cpURL)
	client := &api.Client{BaseURL: cpURL, Token: obsToken}
	nodeIDs := []string{"node-1", "node-2", "node-3"}
	agents := map[string]*agentProc{}
	for _, id := range nodeIDs {
		port := freePort(t)
		a := &agentProc{id: id, url: "http://" + addr(port), runtimeDir: t.TempDir()}
		a.args = []string{"--cloud-profile", "--addr", addr(port), "--node-id", id, "--address", a.url,
			"--orchestratord-url", cpURL, "--runtime-dir", a.runtimeDir, "--pools", "pool-0",
			"--engine", "sim", "--model", "/models/" + simModel, "--engine-slots", "4", "--engine-args", "--tokens-per-second 200",
			"--gpu-source", "sim", "--sim-gpus", "2xH200:141GiB"}
		a.proc = start(t, "pool-managerd", id, a.args, env...)
		agents[id] = a
	}
	waitFor(t, 30*time.Second, "every node online with its pool ready", func() bool {
		ns := nodes(client, false)
		for _, id := range nodeIDs {
			if ns[id].Status != api.StatusOnline || len(ns[id].Pools) != 1 || !ns[id].Pools[0].Ready {
				return false
			}
		}
		return true
	})

	// A steady open-loop load of streamed OpenAI requests, for the rest of
	// the test.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	type loadOutcome struct {
		res *loadgen.Result
		err error
	}
	loadDone := make(chan loadOutcome, 1)
	go func() {
		res, err := loadgen.Run(loadCtx, loadgen.Config{BaseURL: cpURL, Model: simModel, Rate: 4, Duration: 10 * time.Minute,
			Grace: -1, Seed: 7, MaxTokens: 8, MaxTokensMax: 24,
			Header: http.Header{"Authorization": {"Bearer " + obsToken}}})
		loadDone <- loadOutcome{res, err}
	}()
	t.Cleanup(stopLoad)
	loadResult := func() *loadgen.Result {
		stopLoad()
		select {
		case o := <-loadDone:
			if o.err != nil {
				t.Fatalf("loadgen: %v", o.err)
			}
			return o.res
		case <-time.After(30 * time.Second):
			t.Fatal("loadgen did not stop")
		}
		return nil
	}

	// Alertmanager with the shipped configuration, where Debian's is
	// installed; otherwise alerts go to a port where nothing listens.
	amPort := freePort(t)
	amURL := ""
	if am, err := exec.LookPath("prometheus-alertmanager"); err == nil {
		start(t, am, "alertmanager", []string{"--config.file=../deploy/alertmanager/alertmanager.yml",
			"--storage.path=" + filepath.Join(dir, "alertmanager"), "--web.listen-address=" + addr(amPort), "--cluster.listen-address="})
		amURL = "http://" + addr(amPort)
		waitFor(t, 30*time.Second, "Alertmanager ready", func() bool { return httpOK(amURL + "/-/ready") })
	} else {
		t.Log("prometheus-alertmanager not installed: Prometheus sends alerts to a port where nothing listens")
	}

	// Prometheus with the shipped configuration: only the control plane's
	// address, the token file, the rules folder and Alertmanager's address
	// changed.
	tokenFile := filepath.Join(dir, "llorch-token")
	if err := os.WriteFile(tokenFile, []byte(obsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pcfg, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	ppath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(ppath, []byte(substitute(t, string(pcfg), "orchestratord:8080", addr(cpPort),
		"/etc/prometheus/llorch-token", tokenFile, "/etc/prometheus/rules", rulesDir, "alertmanager:9093", addr(amPort))), 0o644); err != nil {
		t.Fatal(err)
	}
	promPort := freePort(t)
	p := prom{base: "http://" + addr(promPort)}
	promStarted := time.Now()
	start(t, prometheusBin, "prometheus", []string{"--config.file=" + ppath, "--storage.tsdb.path=" + filepath.Join(dir, "tsdb"),
		"--web.listen-address=" + addr(promPort), "--enable-feature=exemplar-storage"})
	waitFor(t, 30*time.Second, "Prometheus ready", func() bool { return httpOK(p.base + "/-/ready") })

	t.Run("every agent discovered through /v2/sd with the token, and up", func(t *testing.T) {
		// The discovery route wants the token: finding the agents proves
		// Prometheus sends it as a Bearer token.
		resp, err := http.Get(cpURL + "/v2/sd")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /v2/sd without the token: %d, want 401", resp.StatusCode)
		}
		var last []promTarget
		took, ok := waitUntil(iv.scrape+20*time.Second, func() bool {
			last = p.targets()
			up := map[string]bool{}
			for _, tg := range last {
				if tg.Health != "up" {
					continue
				}
				switch tg.ScrapePool {
				case dashboards.JobControlPlane:
					up["cp"] = true
				case dashboards.JobAgents:
					up[tg.Labels["node_id"]] = tg.DiscoveredLabels["__meta_llorch_status"] == "online"
				}
			}
			return up["cp"] && up["node-1"] && up["node-2"] && up["node-3"]
		})
		if !ok {
			var lines []string
			for _, tg := range last {
				lines = append(lines, fmt.Sprintf("  %s %s node_id=%q %s %s", tg.ScrapePool, tg.Labels["instance"], tg.Labels["node_id"], tg.Health, tg.LastError))
			}
			t.Fatalf("after %v, not the control plane and 3 online agents up; targets:\n%s", took, strings.Join(lines, "\n"))
		}
		t.Logf("control plane and agents up %v after Prometheus was ready (%v after it started)", took, time.Since(promStarted))
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("no exported_ labels, no status label on agent series", func(t *testing.T) {
		var names []string
		if err := p.get("/api/v1/labels", nil, &names); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "exported_") || n == "llorch_status" {
				t.Errorf("label %q exists: honor_labels or a relabelling is wrong", n)
			}
		}
		for _, expr := range []string{`count by (__name__) ({exported_node_id=~".+"})`, `count by (__name__) ({job="llorch-agents", status=~".+"})`} {
			s, err := p.series(expr, true, 0, 0)
			if err != nil || len(s) != 0 {
				t.Errorf("%s: %v %v, want nothing", expr, s, err)
			}
		}
		// Every agent series carries its node's id.
		s, err := p.series(`count by (__name__) ({job="llorch-agents", node_id=""})`, true, 0, 0)
		if err != nil || len(s) != 0 {
			t.Errorf("agent series without node_id: %v %v", s, err)
		}
	})

	// One agent dies now; while its alert takes its course, the panels are
	// checked on the others.
	victim := agents["node-3"]
	victim.signal(t, syscall.SIGKILL)
	victim.wait(t, 10*time.Second)
	killed := time.Now()

	t.Run("every dashboard query and recording rule returns series", func(t *testing.T) {
		if rate, err := model.ParseDuration(dashboards.RateInterval); err != nil || time.Duration(rate) < 4*iv.scrape {
			t.Errorf("dashboards.RateInterval %q (what Expand puts for $__rate_interval): want at least 4 x the %v scrape interval", dashboards.RateInterval, iv.scrape)
		}
		vars := map[string]string{}
		vs, err := dashboards.Variables()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"node_id": "node-1", "pool_id": "pool-0", "gpu": "0"}
		// Template variables, as Grafana fills them (label values of a
		// selector), each dashboard's in order so that later ones see the
		// earlier ones' values.
		for _, v := range vs {
			m := labelValuesRE.FindStringSubmatch(v.Query)
			if m == nil {
				t.Errorf("%s variable %s: query %q is not label_values(selector, label)", v.Dashboard, v.Name, v.Query)
				continue
			}
			sel := dashboards.Expand(m[1], want)
			var values []string
			waitFor(t, 2*iv.scrape, v.Dashboard+" variable "+v.Name, func() bool {
				err := p.get("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {sel},
					"start": {unix(promStarted)}, "end": {unix(time.Now())}}, &values)
				return err == nil && len(values) > 0
			})
			if v.Name == "node_id" && !slices.Equal(values, nodeIDs) {
				t.Errorf("%s variable node_id = %v, want %v", v.Dashboard, values, nodeIDs)
			}
			if w, ok := want[v.Name]; !ok || !slices.Contains(values, w) {
				t.Errorf("%s variable %s = %v: no %q", v.Dashboard, v.Name, values, w)
			}
			vars[v.Name] = want[v.Name]
		}

		qs, err := dashboards.Queries()
		if err != nil {
			t.Fatal(err)
		}
		type check struct {
			what, expr string
			instant    bool
			allowed    string // why it may be empty here
		}
		var checks []check
		for _, q := range qs {
			c := check{what: fmt.Sprintf("%s / %s / %s", q.Dashboard, q.Panel, q.RefID), expr: dashboards.Expand(q.Expr, vars), instant: q.Instant}
			for metric, why := range unqueriedPanelMetrics {
				if regexp.MustCompile(`\b` + metric + `\b`).MatchString(q.Expr) {
					c.allowed = why
				}
			}
			checks = append(checks, c)
		}
		for _, r := range records {
			checks = append(checks, check{what: "recording rule", expr: r, instant: true})
		}
		// Rates need two scrapes within their window, recording rules an
		// evaluation after that.
		deadline := 3*iv.scrape + 2*iv.eval + 20*time.Second
		var empty []string
		took, ok := waitUntil(deadline, func() bool {
			empty = empty[:0]
			for _, c := range checks {
				s, err := p.series(c.expr, c.instant, 2*time.Minute, iv.scrape)
				if err != nil {
					t.Fatalf("%s: %s: %v", c.what, c.expr, err)
				}
				if len(s) == 0 && c.allowed == "" {
					empty = append(empty, fmt.Sprintf("  %s: %s", c.what, c.expr))
				}
			}
			return len(empty) == 0
		})
		if !ok {
			t.Fatalf("after %v, %d of %d queries return nothing:\n%s", deadline, len(empty), len(checks), strings.Join(empty, "\n"))
		}
		t.Logf("%d panel targets and %d recording rules return series, %v after the kill (%v after Prometheus started)",
			len(qs), len(records), took, time.Since(promStarted))
		for _, c := range checks {
			if c.allowed == "" {
				continue
			}
			if s, _ := p.series(c.expr, c.instant, 2*time.Minute, iv.scrape); len(s) > 0 {
				t.Errorf("%s: %s is allow-listed (%s) but returns series: shorten the allow-list", c.what, c.expr, c.allowed)
			} else {
				t.Logf("allowed empty: %s: %s (%s)", c.what, c.expr, c.allowed)
			}
		}
	})

	t.Run("every rule evaluates without error", func(t *testing.T) {
		var data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := p.get("/api/v1/rules", nil, &data); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					t.Errorf("rule %s/%s: health %q %s", g.Name, r.Name, r.Health, r.LastError)
				}
			}
		}
		if n == 0 {
			t.Fatal("Prometheus loaded no rule")
		}
	})

	t.Run("LlorchNodeOffline fires for the killed node and resolves", func(t *testing.T) {
		budget := nodeTimeout + staleCheck + iv.scrape + iv.eval + offlineFor + 20*time.Second
		var a promAlert
		waitFor(t, budget-time.Since(killed), "LlorchNodeOffline firing for node-3", func() bool {
			var ok bool
			a, ok = p.alert("LlorchNodeOffline", "node-3")
			return ok && a.State == "firing"
		})
		fired := time.Since(killed)
		t.Logf("LlorchNodeOffline fired %v after the SIGKILL (budget %v: node-timeout %v + stale check %v + scrape %v + evaluation %v + for %v + 20s), pending since %v after it",
			fired.Round(time.Second), budget, nodeTimeout, staleCheck, iv.scrape, iv.eval, offlineFor, a.ActiveAt.Sub(killed).Round(time.Second))
		for _, other := range []string{"node-1", "node-2"} {
			if _, ok := p.alert("LlorchNodeOffline", other); ok {
				t.Errorf("LlorchNodeOffline for %s, which is alive", other)
			}
		}
		if amURL != "" {
			// Alertmanager routes it (severity warning: the chat receiver)
			// and does not inhibit it with itself.
			waitFor(t, 2*iv.eval, "LlorchNodeOffline in Alertmanager", func() bool {
				var as []struct {
					Labels    map[string]string `json:"labels"`
					Receivers []struct {
						Name string `json:"name"`
					} `json:"receivers"`
					Status struct {
						State string `json:"state"`
					} `json:"status"`
				}
				resp, err := promHTTP.Get(amURL + "/api/v2/alerts?filter=" + url.QueryEscape(`alertname="LlorchNodeOffline"`))
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				if json.NewDecoder(resp.Body).Decode(&as) != nil {
					return false
				}
				for _, x := range as {
					if x.Labels["node_id"] == "node-3" && len(x.Receivers) == 1 && x.Receivers[0].Name == "chat" && x.Status.State == "active" {
						return true
					}
				}
				return false
			})
		}

		// The agent comes back under the same id and address (it runs
		// until the end of the whole test).
		restarted := time.Now()
		start(top, "pool-managerd", "node-3 (restarted)", victim.args, env...)
		waitFor(t, iv.scrape+iv.eval+30*time.Second, "LlorchNodeOffline resolved and node-3 up again", func() bool {
			if _, ok := p.alert("LlorchNodeOffline", "node-3"); ok {
				return false
			}
			s, err := p.series(`up{job="llorch-agents", node_id="node-3"} == 1`, true, 0, 0)
			return err == nil && len(s) == 1
		})
		t.Logf("LlorchNodeOffline resolved %v after the agent restarted", time.Since(restarted).Round(time.Second))
	})

	t.Run("a TTFT exemplar's trace is in Jaeger", func(t *testing.T) {
		type exemplar struct {
			Labels map[string]string `json:"labels"`
		}
		var traceID, spanID string
		waitFor(t, 2*iv.scrape, "an exemplar on llorch_task_time_to_first_token_seconds_bucket", func() bool {
			var data []struct {
				SeriesLabels map[string]string `json:"seriesLabels"`
				Exemplars    []exemplar        `json:"exemplars"`
			}
			err := p.get("/api/v1/query_exemplars", url.Values{"query": {"llorch_task_time_to_first_token_seconds_bucket"},
				"start": {unix(promStarted)}, "end": {unix(time.Now())}}, &data)
			if err != nil {
				return false
			}
			for _, s := range data {
				for _, e := range s.Exemplars {
					if e.Labels["trace_id"] != "" {
						traceID, spanID = e.Labels["trace_id"], e.Labels["span_id"]
						return true
					}
				}
			}
			return false
		})
		var tr struct {
			Data []struct {
				TraceID string `json:"traceID"`
				Spans   []struct {
					SpanID        string `json:"spanID"`
					OperationName string `json:"operationName"`
				} `json:"spans"`
			} `json:"data"`
		}
		// The daemons export spans in batches (every 5 s by default).
		waitFor(t, 30*time.Second, "trace "+traceID+" in Jaeger", func() bool {
			resp, err := promHTTP.Get(jaegerURL + "/api/traces/" + traceID)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&tr) == nil && len(tr.Data) == 1 && len(tr.Data[0].Spans) > 0
		})
		var ops []string
		hasSpan := false
		for _, s := range tr.Data[0].Spans {
			ops = append(ops, s.OperationName)
			hasSpan = hasSpan || s.SpanID == spanID
		}
		if !hasSpan {
			t.Errorf("trace %s has no span %s (the exemplar's span_id); spans %v", traceID, spanID, ops)
		}
		t.Logf("exemplar trace %s in Jaeger: %v", traceID, ops)
		// Log lines written inside a traced request carry its trace: the
		// agent's registration, traced across both daemons.
		m := regexp.MustCompile(`msg="registered with control plane" .*trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})`).FindStringSubmatch(agents["node-1"].out.String())
		if m == nil {
			t.Fatal("node-1 logged no trace_id with its registration")
		}
		waitFor(t, 30*time.Second, "the registration's trace "+m[1]+" (from node-1's log) in Jaeger, both daemons in it", func() bool {
			resp, err := promHTTP.Get(jaegerURL + "/api/traces/" + m[1])
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var reg struct {
				Data []jaegerTrace `json:"data"`
			}
			if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&reg) != nil || len(reg.Data) != 1 {
				return false
			}
			svcs := reg.Data[0].services()
			return svcs["pool-managerd"] && svcs["orchestratord"]
		})
		var services struct {
			Data []string `json:"data"`
		}
		if err := json.Unmarshal([]byte(get(t, jaegerURL+"/api/services")), &services); err != nil ||
			!slices.Contains(services.Data, "orchestratord") || !slices.Contains(services.Data, "pool-managerd") {
			t.Errorf("Jaeger services %v (%v): want orchestratord and pool-managerd", services.Data, err)
		}
	})

	// Both daemons' /metrics, as they are now (after load, a node lost and
	// back).
	cpText := get(t, cpURL+"/metrics")
	agentText := get(t, agents["node-1"].url+"/metrics")

	t.Run("promtool check metrics on both daemons", func(t *testing.T) {
		if promtoolBin == "" {
			t.Skip("promtool not installed")
		}
		promtoolCheck(t, promtoolBin, cpText)
		promtoolCheck(t, promtoolBin, agentText)
	})

	t.Run("metrics.md documents every llorch metric and no other", func(t *testing.T) {
		documented := documentedMetrics(t, "../docs/metrics.md")
		exported := map[string]*dto.MetricFamily{}
		for who, text := range map[string]string{"orchestratord": cpText, "pool-managerd": agentText} {
			fams, err := promtext.Parse(strings.NewReader(text))
			if err != nil {
				t.Fatalf("%s /metrics: %v", who, err)
			}
			for name, f := range fams {
				if strings.HasPrefix(name, "llorch_") {
					exported[name] = f
				}
			}
		}
		for name, f := range exported {
			doc, ok := documented[name]
			if !ok {
				t.Errorf("%s (%s) is exported but not in docs/metrics.md", name, strings.ToLower(f.GetType().String()))
				continue
			}
			if typ := strings.ToLower(f.GetType().String()); typ != doc.typ {
				t.Errorf("%s: exported as a %s, documented as a %s", name, typ, doc.typ)
			}
			have := map[string]bool{}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					have[l.GetName()] = true
					if vs, ok := doc.values[l.GetName()]; ok && !slices.Contains(vs, l.GetValue()) {
						t.Errorf("%s{%s=%q}: the value is not among those docs/metrics.md lists (%v)", name, l.GetName(), l.GetValue(), vs)
						doc.values[l.GetName()] = append(vs, l.GetValue()) // once
					}
				}
			}
			if got, want := sortedKeys(have), sortedKeys(doc.labels); !slices.Equal(got, want) {
				t.Errorf("%s: labels %v, documented %v", name, got, want)
			}
		}
		var missing []string
		for name := range documented {
			if exported[name] != nil {
				continue
			}
			if why, ok := configDependentMetrics[name]; ok {
				t.Logf("documented, not exported here: %s (%s)", name, why)
				continue
			}
			missing = append(missing, name)
		}
		for name := range configDependentMetrics {
			if exported[name] != nil {
				t.Errorf("%s is listed as configuration-dependent but is exported here", name)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("documented in docs/metrics.md but exported by neither daemon: %v", missing)
		}
	})

	t.Run("the load ran", func(t *testing.T) {
		r := loadResult()
		if r == nil || r.Completed == 0 {
			t.Fatalf("load: %+v", r)
		}
		t.Logf("load: %d requests completed, %d failed, %d rejected, %d unfinished", r.Completed, r.Failed, r.Rejected, r.Unfinished)
	})
	t.Logf("observability e2e: %v", time.Since(begin).Round(time.Second))
}

// waitUntil polls cond every 200ms until it holds or d passes, and says
// how long it took and whether it held.
func waitUntil(d time.Duration, cond func() bool) (time.Duration, bool) {
	begin := time.Now()
	for {
		if cond() {
			return time.Since(begin), true
		}
		if time.Since(begin) > d {
			return time.Since(begin), false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpOK(u string) bool {
	resp, err := promHTTP.Get(u)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type docMetric struct {
	typ    string
	labels map[string]bool
	// values lists a label's values where the table does: `outcome` (ok,
	// error).
	values map[string][]string
}

// documentedMetrics reads the metric tables of docs/metrics.md: each row
// names one or more metrics (later ones may be suffixes of the first:
// `llorch_gpu_memory_total_bytes`, `_used_bytes`), its type and its labels
// in backticks ("same" repeats the row above's).
func documentedMetrics(t *testing.T, path string) map[string]docMetric {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tick := regexp.MustCompile("`([^`]+)`")
	enum := regexp.MustCompile("`(\\w+)` \\(([a-z_]+(?:, [a-z_]+)*)\\)")
	out := map[string]docMetric{}
	var prev map[string]bool
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "| `llorch_") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		typ := strings.TrimSpace(cells[2])
		labels := map[string]bool{}
		if strings.HasPrefix(strings.TrimSpace(cells[3]), "same") {
			for l := range prev {
				labels[l] = true
			}
		}
		for _, m := range tick.FindAllStringSubmatch(cells[3], -1) {
			labels[m[1]] = true
		}
		prev = labels
		values := map[string][]string{}
		for _, m := range enum.FindAllStringSubmatch(cells[3], -1) {
			values[m[1]] = strings.Split(m[2], ", ")
		}
		var first string
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			name := m[1]
			if strings.HasPrefix(name, "_") && first != "" {
				parts := strings.Split(first, "_")
				name = strings.Join(parts[:len(parts)-strings.Count(name, "_")], "_") + name
			} else if first == "" {
				first = name
			}
			out[name] = docMetric{typ: typ, labels: labels, values: values}
		}
	}
	if len(out) < 40 {
		t.Fatalf("read only %d metrics from %s: has its table format changed?", len(out), path)
	}
	return out
}
