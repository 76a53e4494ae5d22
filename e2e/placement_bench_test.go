//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llorch/llorch/loadgen"
	"github.com/llorch/llorch/promtext"
)

// BenchmarkPlacementRunning (make bench-placement) judges placement the way
// SPEC §6 asks: the running system against nginx in front of the same
// engines. Per fleet it starts real processes — orchestratord
// --cloud-profile and one pool-managerd per node (default heartbeat and
// engine-poll intervals), each launching one `llorch sim-engine` with 4
// slots at the node's speed — then nginx with two upstreams over those
// engines, round robin and least_conn. Each load (50, 80, 95 % of the
// fleet's capacity) offers the same seeded Poisson arrivals
// (loadgen) to llorch's /v1/chat/completions, nginx least_conn and nginx
// round robin in turn, each cell starting from idle engines (and, for
// llorch, from a registry that has seen them idle). Before the first cell
// an unmeasured warm-up (LLORCH_BENCH_WARMUP, default 3s at 50 %) lets
// llorch learn the slots' speeds, as a running system would have.
//
// A cell's arrivals last LLORCH_BENCH_CELL (default 12s); requests still
// running LLORCH_BENCH_GRACE later (default a quarter of the cell, 2-5 s) are
// cancelled and counted unfinished. Percentiles are over completed
// requests, so a policy that leaves many unfinished has a better-looking
// tail than it earned: read them with the failed+unfinished column.
// LLORCH_BENCH_FLEETS (comma list) picks fleets; LLORCH_BENCH_JSON names
// the JSON output (default: a temp file, whose path is printed).
//
// Every process is a child of the test and is killed by the harness's
// cleanup at the end of its fleet.
func BenchmarkPlacementRunning(b *testing.B) {
	nginx := findNginx()
	if nginx == "" {
		b.Skip("nginx not found (PATH, /usr/sbin/nginx): `make bench-placement` installs it (apt-get install nginx-light), or install nginx yourself")
	}
	cell := envDuration(b, "LLORCH_BENCH_CELL", 12*time.Second)
	grace := envDuration(b, "LLORCH_BENCH_GRACE", min(max(cell/4, 2*time.Second), 5*time.Second))
	warmup := envDuration(b, "LLORCH_BENCH_WARMUP", 3*time.Second)
	fleets := placementFleets
	if only := os.Getenv("LLORCH_BENCH_FLEETS"); only != "" {
		fleets = nil
		for _, name := range strings.Split(only, ",") {
			f, ok := fleetByName(strings.TrimSpace(name))
			if !ok {
				b.Fatalf("LLORCH_BENCH_FLEETS: no fleet %q (have skewed-2, hetero-4, identical-4)", name)
			}
			fleets = append(fleets, f)
		}
	}
	jsonPath := os.Getenv("LLORCH_BENCH_JSON")
	if jsonPath == "" {
		f, err := os.CreateTemp("", "bench-placement-*.json")
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		jsonPath = f.Name()
	}

	report := &benchReport{
		Started: time.Now().UTC(), CellSeconds: cell.Seconds(), GraceSeconds: grace.Seconds(),
		WarmupSeconds: warmup.Seconds(), Slots: benchSlots, MaxTokens: benchMaxTokens,
		PromptWords: benchPromptWords, Loads: benchLoads, Nginx: nginx,
	}
	for _, f := range fleets {
		report.Fleets = append(report.Fleets, benchFleetJSON{Name: f.name, TokensPerSecond: f.tps, CapacityRPS: f.capacity(), Note: f.note})
	}
	fmt.Printf("\nplacement benchmark: %d fleets x %d loads x %d policies, %v cells + up to %v grace; JSON: %s\n\n",
		len(fleets), len(benchLoads), len(benchPolicies), cell, grace, jsonPath)
	fmt.Println(benchTableHeader)
	begin := time.Now()
	for _, f := range fleets {
		b.Run(f.name, func(b *testing.B) {
			runBenchFleet(b, f, nginx, cell, grace, warmup, report, jsonPath)
		})
	}
	report.WallSeconds = time.Since(begin).Seconds()
	writeBenchJSON(b, jsonPath, report)
	fmt.Printf("\n%s\n", report.table())
	fmt.Printf("wall time %v; JSON: %s\n", time.Since(begin).Round(time.Second), jsonPath)
}

const (
	benchSlots       = 4
	benchMaxTokens   = 32
	benchPromptWords = 8
	benchModel       = "stories260K.gguf"
)

var benchLoads = []float64{0.5, 0.8, 0.95}

// The policies, in the order each load offers its arrivals to them.
const (
	policyLlorch    = "llorch"
	policyLeastConn = "nginx least_conn"
	policyRR        = "nginx round robin"
)

var benchPolicies = []string{policyLlorch, policyLeastConn, policyRR}

type benchFleet struct {
	name string
	tps  []float64 // per node: tokens/s of one slot
	note string
}

var placementFleets = []benchFleet{
	{"skewed-2", []float64{500, 100}, "two nodes, 5x speed skew"},
	{"hetero-4", []float64{400, 100, 100, 20}, "fast, two slow, one short of VRAM that crawls"},
	{"identical-4", []float64{200, 200, 200, 200}, "four identical nodes"},
}

func fleetByName(name string) (benchFleet, bool) {
	for _, f := range placementFleets {
		if f.name == name {
			return f, true
		}
	}
	return benchFleet{}, false
}

// capacity is the fleet's completions per second with every slot busy:
// sum of slots x tokens/s over tokens per task (prefill of the short
// prompt is a few ms and left out).
func (f benchFleet) capacity() float64 {
	c := 0.0
	for _, tps := range f.tps {
		c += benchSlots * tps / benchMaxTokens
	}
	return c
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return d
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	b.Fatalf("%s=%q: want a duration such as 12s", name, v)
	return 0
}

// runBenchFleet starts one fleet with nginx in front of its engines and runs
// every load and policy on it.
func runBenchFleet(b *testing.B, f benchFleet, nginx string, cell, grace, warmup time.Duration, report *benchReport, jsonPath string) {
	cpURL, engines, lc, rr := startBenchFleet(b, f, nginx)
	targets := map[string]string{policyLlorch: cpURL, policyLeastConn: lc, policyRR: rr}

	client := loadgen.NewClient()
	defer client.CloseIdleConnections()
	capacity := f.capacity()
	if warmup > 0 {
		// llorch learns per-slot speeds online: a short unmeasured load
		// gives it what a running system would already know.
		waitIdle(b, cpURL, engines, true)
		_, err := loadgen.Run(context.Background(), loadgen.Config{BaseURL: cpURL, Model: benchModel,
			Rate: 0.5 * capacity, Duration: warmup, Grace: grace, Seed: 999, MaxTokens: benchMaxTokens,
			PromptWords: benchPromptWords, Client: client})
		if err != nil {
			b.Fatal(err)
		}
	}
	for li, load := range benchLoads {
		// Seeded by the fleet's name, so a run of some fleets offers each
		// the same arrivals as a run of all.
		seed := uint64(1+li) + 10*uint64(crc32.ChecksumIEEE([]byte(f.name)))
		for _, policy := range benchPolicies {
			idle := waitIdle(b, cpURL, engines, policy == policyLlorch)
			cfg := loadgen.Config{BaseURL: targets[policy], Model: benchModel, Rate: load * capacity,
				Duration: cell, Grace: grace, Seed: seed, MaxTokens: benchMaxTokens,
				PromptWords: benchPromptWords, Client: client}
			res, err := loadgen.Run(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			c := benchCell{Fleet: f.name, Load: load, Policy: policy, RateRPS: cfg.Rate, Seed: seed, Result: res,
				IdleWaitSeconds: idle.Seconds(), FirstErrors: firstErrors(res, 3)}
			report.Cells = append(report.Cells, c)
			fmt.Println(c.row())
			writeBenchJSON(b, jsonPath, report)
		}
	}
}

// startBenchFleet starts orchestratord, one pool-managerd per node of f
// with its sim engine, and nginx in front of the engines; it returns the
// control plane's URL, the engines' URLs in node order, and nginx's
// least_conn and round-robin URLs.
func startBenchFleet(b *testing.B, f benchFleet, nginx string) (cpURL string, engines []string, leastConn, roundRobin string) {
	cpPort := freePort(b)
	cpURL = "http://" + addr(cpPort)
	// LLORCH_BENCH_ORCHD_ARGS adds orchestratord flags, to compare
	// settings (e.g. --engine-backlog 1) in a run of their own.
	start(b, "orchestratord", "orchestratord", append([]string{"--cloud-profile", "--addr", addr(cpPort)}, strings.Fields(os.Getenv("LLORCH_BENCH_ORCHD_ARGS"))...))
	waitHealthy(b, cpURL)
	for i, tps := range f.tps {
		id := fmt.Sprintf("node-%d", i+1)
		port := freePort(b)
		agentURL := "http://" + addr(port)
		start(b, "pool-managerd", id, []string{"--cloud-profile", "--addr", addr(port), "--node-id", id,
			"--address", agentURL, "--orchestratord-url", cpURL, "--runtime-dir", b.TempDir(),
			"--pools", "pool-0", "--engine", "sim", "--model", "/models/" + benchModel,
			"--engine-slots", strconv.Itoa(benchSlots), "--engine-args", "--tokens-per-second " + strconv.FormatFloat(tps, 'f', -1, 64),
			"--gpu-source", "sim", "--sim-gpus", "1xH200:141GiB"})
		waitHealthy(b, agentURL)
	}
	waitFor(b, 60*time.Second, "every node online with a ready pool", func() bool {
		engines = fleetEngines(cpURL, len(f.tps))
		return engines != nil
	})
	for _, e := range engines {
		waitHealthy(b, e)
	}
	leastConn, roundRobin = startNginx(b, nginx, engines)
	return cpURL, engines, leastConn, roundRobin
}

// BenchmarkProxyThroughput measures the streaming path's cost, the proxy's
// own CPU and latency: two engines so fast that they are never the limit,
// a closed loop of 8 concurrent streams of 32 tokens for
// LLORCH_BENCH_CELL (default 12 s) through orchestratord and through nginx
// least_conn over the same engines, in one run. It reports requests/s of
// each and llorch's share of nginx's.
func BenchmarkProxyThroughput(b *testing.B) {
	nginx := findNginx()
	if nginx == "" {
		b.Skip("nginx not found (PATH, /usr/sbin/nginx): `make bench-placement` installs it (apt-get install nginx-light)")
	}
	cell := envDuration(b, "LLORCH_BENCH_CELL", 12*time.Second)
	f := benchFleet{name: "fast-2", tps: []float64{1e6, 1e6}, note: "two engines that are never the limit"}
	cpURL, engines, lc, _ := startBenchFleet(b, f, nginx)
	client := loadgen.NewClient()
	defer client.CloseIdleConnections()
	const streams = 8
	rps := map[string]float64{}
	for _, policy := range []string{policyLeastConn, policyLlorch, policyLeastConn, policyLlorch} {
		target := map[string]string{policyLlorch: cpURL, policyLeastConn: lc}[policy]
		waitIdle(b, cpURL, engines, policy == policyLlorch)
		res, err := loadgen.RunClosed(context.Background(), loadgen.Config{BaseURL: target, Model: benchModel, Duration: cell / 2,
			Grace: 5 * time.Second, Seed: 1, MaxTokens: benchMaxTokens, PromptWords: benchPromptWords, Client: client}, streams)
		if err != nil {
			b.Fatal(err)
		}
		if res.Failed+res.Rejected+res.Unfinished > 0 {
			b.Errorf("%s: %d failed, %d rejected, %d unfinished: %v", policy, res.Failed, res.Rejected, res.Unfinished, firstErrors(res, 3))
		}
		fmt.Printf("%-18s %d streams: %7.1f requests/s, TTFT p50 %v p99 %v, latency p50 %v p99 %v\n", policy, streams,
			res.RequestsPerSecond, res.TTFT.P50, res.TTFT.P99, res.Latency.P50, res.Latency.P99)
		rps[policy] += res.RequestsPerSecond / 2
	}
	b.ReportMetric(rps[policyLlorch], "llorch-req/s")
	b.ReportMetric(rps[policyLeastConn], "nginx-req/s")
	b.ReportMetric(100*rps[policyLlorch]/rps[policyLeastConn], "llorch-%-of-nginx")
	fmt.Printf("llorch %.1f requests/s, nginx least_conn %.1f: %.0f %% of nginx's\n", rps[policyLlorch], rps[policyLeastConn], 100*rps[policyLlorch]/rps[policyLeastConn])
}

// fleetEngines returns the engine URL of each node's ready pool, in node
// order, once all n nodes are online with one; nil before.
func fleetEngines(cpURL string, n int) []string {
	var list struct {
		Nodes []struct {
			NodeID string `json:"node_id"`
			Status string `json:"status"`
			Pools  []struct {
				Ready bool   `json:"ready"`
				URL   string `json:"url"`
			} `json:"pools"`
		} `json:"nodes"`
	}
	if getJSON(cpURL+"/v2/nodes", &list) != nil {
		return nil
	}
	byNode := map[string]string{}
	for _, node := range list.Nodes {
		for _, p := range node.Pools {
			if node.Status == "online" && p.Ready && p.URL != "" {
				byNode[node.NodeID] = p.URL
			}
		}
	}
	out := make([]string, 0, n)
	for i := 1; i <= n; i++ {
		u, ok := byNode[fmt.Sprintf("node-%d", i)]
		if !ok {
			return nil
		}
		out = append(out, u)
	}
	return out
}

func getJSON(u string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// startNginx runs nginx in the foreground (no master, no daemon, every path
// in a temp dir) with a least_conn and a round-robin server over engines,
// and returns their base URLs.
func startNginx(b *testing.B, nginx string, engines []string) (leastConn, roundRobin string) {
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		b.Fatal(err)
	}
	var servers strings.Builder
	for _, e := range engines {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" {
			b.Fatalf("engine URL %q: %v", e, err)
		}
		fmt.Fprintf(&servers, "        server %s;\n", u.Host)
	}
	lcPort, rrPort := freePort(b), freePort(b)
	location := `
        location / {
            proxy_pass http://%s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }`
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    upstream engines_least_conn {
        least_conn;
%[2]s        keepalive 256;
    }
    upstream engines_round_robin {
%[2]s        keepalive 256;
    }
    server {
        listen 127.0.0.1:%[3]d;%[5]s
    }
    server {
        listen 127.0.0.1:%[4]d;%[6]s
    }
}
`, dir, servers.String(), lcPort, rrPort,
		fmt.Sprintf(location, "engines_least_conn"), fmt.Sprintf(location, "engines_round_robin"))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"-p", dir + "/", "-e", filepath.Join(dir, "error.log"), "-c", confPath}
	if out, err := exec.Command(nginx, append(args, "-t")...).CombinedOutput(); err != nil {
		b.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	start(b, nginx, "nginx", args)
	leastConn, roundRobin = "http://"+addr(lcPort), "http://"+addr(rrPort)
	waitHealthy(b, leastConn) // proxied to an engine's /health
	waitHealthy(b, roundRobin)
	return leastConn, roundRobin
}

// waitIdle waits until no engine processes or defers a request and the
// control plane queues nothing, so a cell starts where the last one's
// cancelled stragglers cannot reach it. With registry, it also waits until
// the control plane's registry shows every slot free: the engines' load
// reaches it with the next heartbeat (every 10 s by default), and until
// then llorch would see the previous cell's load as someone else's.
func waitIdle(b *testing.B, cpURL string, engines []string, registry bool) time.Duration {
	const limit = 30 * time.Second
	begin := time.Now()
	for {
		busy := idleCheck(cpURL, engines, registry)
		if busy == "" {
			return time.Since(begin)
		}

		if time.Since(begin) > limit {
			b.Logf("not idle after %v (%s); running the next cell anyway", limit, busy)
			return time.Since(begin)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idleCheck returns what is still busy, "" when nothing is.
func idleCheck(cpURL string, engines []string, registry bool) string {
	for _, e := range engines {
		for _, name := range []string{"llamacpp:requests_processing", "llamacpp:requests_deferred"} {
			if v, err := metricSum(e+"/metrics", name); err != nil || v != 0 {
				return fmt.Sprintf("%s %s = %v (%v)", e, name, v, err)
			}
		}
	}
	if v, err := metricSum(cpURL+"/metrics", "llorch_admission_queue_depth"); err == nil && v != 0 {
		return fmt.Sprintf("control plane queue %v", v)
	}
	if !registry {
		return ""
	}
	var list struct {
		Nodes []struct {
			NodeID string `json:"node_id"`
			Pools  []struct {
				SlotsTotal int `json:"slots_total"`
				SlotsFree  int `json:"slots_free"`
			} `json:"pools"`
		} `json:"nodes"`
	}
	if err := getJSON(cpURL+"/v2/nodes", &list); err != nil {
		return err.Error()
	}
	for _, n := range list.Nodes {
		for _, p := range n.Pools {
			if p.SlotsFree != p.SlotsTotal {
				return fmt.Sprintf("registry: %s has %d/%d slots free", n.NodeID, p.SlotsFree, p.SlotsTotal)
			}
		}
	}
	return ""
}

// metricSum is the sum of a metric's samples at u (0 when absent).
func metricSum(u, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	fams, err := promtext.Parse(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	if f, ok := fams[name]; ok {
		for _, m := range f.GetMetric() {
			sum += promtext.Value(m)
		}
	}
	return sum, nil
}

// firstErrors is up to n distinct error messages of a result.
func firstErrors(res *loadgen.Result, n int) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range res.Records {
		if r.Err == "" || seen[r.Err] {
			continue
		}
		seen[r.Err] = true
		out = append(out, r.Outcome.String()+": "+r.Err)
		if len(out) == n {
			break
		}
	}
	return out
}

type benchReport struct {
	Started       time.Time        `json:"started"`
	WallSeconds   float64          `json:"wall_seconds,omitempty"`
	CellSeconds   float64          `json:"cell_seconds"`
	GraceSeconds  float64          `json:"grace_seconds"`
	WarmupSeconds float64          `json:"warmup_seconds"`
	Slots         int              `json:"slots_per_engine"`
	MaxTokens     int              `json:"max_tokens"`
	PromptWords   int              `json:"prompt_words"`
	Loads         []float64        `json:"loads"`
	Nginx         string           `json:"nginx"`
	Fleets        []benchFleetJSON `json:"fleets"`
	Cells         []benchCell      `json:"cells"`
}

type benchFleetJSON struct {
	Name            string    `json:"name"`
	TokensPerSecond []float64 `json:"tokens_per_second_per_slot"`
	CapacityRPS     float64   `json:"capacity_rps"`
	Note            string    `json:"note"`
}

type benchCell struct {
	Fleet   string          `json:"fleet"`
	Load    float64         `json:"load"`
	Policy  string          `json:"policy"`
	RateRPS float64         `json:"rate_rps"`
	Seed    uint64          `json:"seed"`
	Result  *loadgen.Result `json:"result"`
	// IdleWaitSeconds is how long the cell waited for the fleet to be idle.
	IdleWaitSeconds float64  `json:"idle_wait_seconds"`
	FirstErrors     []string `json:"first_errors,omitempty"`
}

const benchTableHeader = `| fleet | load | policy | offered | completed | rejected | failed+unfinished | TTFT p50 ms | TTFT p99 ms | latency p50 ms | latency p99 ms | req/s | tokens/s |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`

func (c benchCell) row() string {
	r := c.Result
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 0, 64) }
	return fmt.Sprintf("| %s | %.0f%% | %s | %d | %d | %d | %d | %s | %s | %s | %s | %.1f | %.0f |",
		c.Fleet, c.Load*100, c.Policy, r.Offered, r.Completed, r.Rejected, r.Failed+r.Unfinished,
		ms(r.TTFT.P50), ms(r.TTFT.P99), ms(r.Latency.P50), ms(r.Latency.P99), r.RequestsPerSecond, r.TokensPerSecond)
}

func (r *benchReport) table() string {
	var s strings.Builder
	s.WriteString(benchTableHeader)
	for _, c := range r.Cells {
		s.WriteString("\n" + c.row())
	}
	return s.String()
}

func writeBenchJSON(b *testing.B, path string, r *benchReport) {
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkProxySustained measures the streaming path under open-loop
// load: Poisson arrivals of 32-token streams at each rate of
// LLORCH_BENCH_RATES (default 250,500,1000,1500 per second) for
// LLORCH_BENCH_CELL (default 10 s), sent in one run straight to an engine
// (no proxy: the floor), through nginx least_conn and through orchestratord
// over the same two never-limiting engines. It prints, per rate, completed
// requests/s and time to first token and end, and what each proxy adds to
// the direct path's p50 and p99; the saturation point is the first rate a
// path cannot complete (under 95 % done, or failures).
func BenchmarkProxySustained(b *testing.B) {
	nginx := findNginx()
	if nginx == "" {
		b.Skip("nginx not found (PATH, /usr/sbin/nginx): `make bench-fleet` installs it (apt-get install nginx-light)")
	}
	cell := envDuration(b, "LLORCH_BENCH_CELL", 10*time.Second)
	var rates []float64
	for _, s := range strings.Split(envOr("LLORCH_BENCH_RATES", "250,500,1000,1500"), ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			b.Fatalf("LLORCH_BENCH_RATES: %q is no rate", s)
		}
		rates = append(rates, r)
	}
	f := benchFleet{name: "fast-2", tps: []float64{1e6, 1e6}, note: "two engines that are never the limit"}
	cpURL, engines, lc, _ := startBenchFleet(b, f, nginx)
	client := loadgen.NewClient()
	defer client.CloseIdleConnections()
	fmt.Printf("%-8s %-18s %9s %6s %10s %10s %10s %10s %12s %12s\n", "rate/s", "path", "done/s", "failed",
		"ttft p50", "ttft p99", "lat p50", "lat p99", "added p50", "added p99")
	for _, rate := range rates {
		var direct *loadgen.Result
		for _, path := range []string{"direct", policyLeastConn, policyLlorch} {
			waitIdle(b, cpURL, engines, path == policyLlorch)
			cfg := loadgen.Config{Model: benchModel, Rate: rate, Duration: cell, Grace: 10 * time.Second, Seed: 1,
				MaxTokens: benchMaxTokens, PromptWords: benchPromptWords, Client: client}
			var res *loadgen.Result
			if path == "direct" {
				res = runDirect(b, cfg, engines)
			} else {
				cfg.BaseURL = map[string]string{policyLeastConn: lc, policyLlorch: cpURL}[path]
				var err error
				if res, err = loadgen.Run(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
			}
			if path == "direct" {
				direct = res
			}
			added50, added99 := res.TTFT.P50-direct.TTFT.P50, res.TTFT.P99-direct.TTFT.P99
			fmt.Printf("%-8.0f %-18s %9.1f %6d %10v %10v %10v %10v %12v %12v\n", rate, path, res.RequestsPerSecond,
				res.Failed+res.Rejected+res.Unfinished, res.TTFT.P50.Round(10*time.Microsecond), res.TTFT.P99.Round(10*time.Microsecond),
				res.Latency.P50.Round(10*time.Microsecond), res.Latency.P99.Round(10*time.Microsecond),
				added50.Round(10*time.Microsecond), added99.Round(10*time.Microsecond))
			if path == policyLlorch {
				b.ReportMetric(float64(added99.Microseconds())/1000, fmt.Sprintf("llorch-added-ttft-p99-ms@%.0f", rate))
			}
			if bad := res.Failed + res.Rejected + res.Unfinished; bad > 0 || float64(res.Completed) < 0.95*float64(res.Offered) {
				fmt.Printf("%-8.0f %-18s saturated: %d of %d completed (%v)\n", rate, path, res.Completed, res.Offered, firstErrors(res, 2))
			}
		}
	}
}

// runDirect offers cfg's load straight to the engines, an equal share
// (independent Poisson streams) to each, as a client that knew the fleet
// would: no proxy between.
func runDirect(b *testing.B, cfg loadgen.Config, engines []string) *loadgen.Result {
	results := make([]*loadgen.Result, len(engines))
	errs := make([]error, len(engines))
	var wg sync.WaitGroup
	for i, e := range engines {
		c := cfg
		c.BaseURL, c.Rate, c.Seed = e, cfg.Rate/float64(len(engines)), cfg.Seed+uint64(i)
		wg.Go(func() { results[i], errs[i] = loadgen.Run(context.Background(), c) })
	}
	wg.Wait()
	var records []loadgen.Record
	var elapsed time.Duration
	for i, r := range results {
		if errs[i] != nil {
			b.Fatal(errs[i])
		}
		records = append(records, r.Records...)
		elapsed = max(elapsed, r.Elapsed)
	}
	res := loadgen.Summarize(records, elapsed)
	return &res
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
