package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/simengine"
	"github.com/llorch/llorch/sse"
)

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*controlplane.Config)
		want string
	}{
		{"policy", func(c *controlplane.Config) { c.AdmissionPolicy = "lifo" }, "--admission-policy/ORCHD_ADMISSION_POLICY"},
		{"capacity", func(c *controlplane.Config) { c.AdmissionCapacity = 0 }, "--admission-capacity/ORCHD_ADMISSION_CAPACITY"},
		{"backlog", func(c *controlplane.Config) { c.EngineBacklog = -1 }, "--engine-backlog/ORCHD_ENGINE_BACKLOG"},
		{"ttft weight", func(c *controlplane.Config) { c.TTFTWeight = 0 }, "--ttft-weight/ORCHD_TTFT_WEIGHT"},
		{"weights", func(c *controlplane.Config) { c.ScoreWeights = "nope=3" }, "--score-weights/ORCHD_SCORE_WEIGHTS"},
		{"prometheus url", func(c *controlplane.Config) { c.PrometheusURL = "prometheus:9090" }, "--prometheus-url/ORCHESTRATORD_PROMETHEUS_URL"},
		{"grace", func(c *controlplane.Config) { c.ShutdownGrace = -time.Second }, "--shutdown-grace/ORCHD_SHUTDOWN_GRACE"},
		{"exposed without a token", func(c *controlplane.Config) { c.Addr = "0.0.0.0:0" }, "token"},
		{"pprof off loopback", func(c *controlplane.Config) { c.PprofAddr = "0.0.0.0:6060" }, "--pprof-addr"},
		{"taken port", func(c *controlplane.Config) { c.Addr = "127.0.0.1:-1" }, "listen on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			d, err := controlplane.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, %v; want an error naming %q", d, err, tc.want)
			}
		})
	}
}

// testConfig is a HOME-profile daemon on a free loopback port, its
// runtime dir a fresh directory.
func testConfig(t *testing.T) controlplane.Config {
	cfg := controlplane.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.RuntimeDir = t.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Version = "v0.0.0-test"
	return cfg
}

// running is a daemon serving in the test's process.
type running struct {
	*controlplane.Daemon
	url    string
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t *testing.T, cfg controlplane.Config) *running {
	t.Helper()
	d, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Daemon: d, url: "http://" + d.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the daemon did not stop")
		}
	})
	return r
}

// announce writes a handoff file into the daemon's runtime dir.
func announceFile(t *testing.T, dir, poolID, url string, slots int) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"pool_id": poolID, "replica_id": "r0", "engine": "llamacpp", "engine_version": "b0-test",
		"url": url, "slots": slots, "model": map[string]string{"id": "tiny"}})
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, poolID+"_r0.json")); err != nil {
		t.Fatal(err)
	}
}

// follow reads a task's event stream to its end in the background; the
// channel gets the events, or nil if the stream did not end properly.
func follow(t *testing.T, c *http.Client, base, id string) (first <-chan struct{}, events <-chan []string) {
	t.Helper()
	resp, err := c.Get(base + "/v2/tasks/" + id + "/events") //nolint:bodyclose // the reading goroutine closes it
	if err != nil {
		t.Fatal(err)
	}
	started, out := make(chan struct{}), make(chan []string, 1)
	go func() {
		defer resp.Body.Close()
		var evs []string
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				out <- evs
				return
			}
			if err != nil {
				out <- nil
				return
			}
			if ev.IsComment {
				continue
			}
			if ev.Type == "token" && len(evs) > 0 && evs[len(evs)-1] == "started" {
				close(started)
			}
			if ev.Type == "error" {
				var e api.Error
				_ = json.Unmarshal([]byte(ev.Data), &e)
				evs = append(evs, "error:"+e.Code)
				continue
			}
			evs = append(evs, ev.Type)
		}
	}()
	return started, out
}

// waitReady waits until placement sees a pool.
func waitReady(t *testing.T, c *http.Client, base string) {
	t.Helper()
	clocktest.WaitFor(t, 5*time.Second, "a ready pool", func() bool {
		resp, err := c.Get(base + "/v2/placement/explain")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var ex api.Explanation
		return json.NewDecoder(resp.Body).Decode(&ex) == nil && len(ex.Candidates) > 0
	})
}

func last(evs []string) string {
	if len(evs) == 0 {
		return "(none)"
	}
	return evs[len(evs)-1]
}

// The daemon's shutdown, in process: ending Run's context closes
// admission (503 on both APIs, /health says draining), ends the queued
// task at once, stops the running one at the grace, and Run returns nil.
func TestDaemonShutsDownGracefully(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 50})
	cfg := testConfig(t)
	cfg.ShutdownGrace = 700 * time.Millisecond
	d := startDaemon(t, cfg)
	c := testClient(t)
	announceFile(t, cfg.RuntimeDir, "pool-0", sim.URL, 1)
	waitReady(t, c, d.url)
	if resp, body := post(t, c, d.url+"/v2/tasks", `{"task_id":"long","prompt":"x","max_tokens":100000}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("long: %d %s", resp.StatusCode, body)
	}
	longStarted, longEvents := follow(t, c, d.url, "long")
	<-longStarted
	if resp, body := post(t, c, d.url+"/v2/tasks", `{"task_id":"queued","prompt":"x","max_tokens":5}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("queued: %d %s", resp.StatusCode, body)
	}
	_, queuedEvents := follow(t, c, d.url, "queued")

	stop := time.Now()
	d.cancel()
	if evs := <-queuedEvents; last(evs) != "error:"+api.CodeShuttingDown {
		t.Errorf("queued task: %v, want it to end with SHUTTING_DOWN", evs)
	}
	if took := time.Since(stop); took > cfg.ShutdownGrace/2 {
		t.Errorf("the queued task ended %v after the shutdown began, want at once", took)
	}
	resp, body := post(t, c, d.url+"/v2/tasks", `{"prompt":"late"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"code":"SHUTTING_DOWN"`) {
		t.Errorf("v2 submission while draining: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, c, d.url+"/v1/completions", `{"prompt":"late"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `{"error":{`) || !strings.Contains(string(body), "SHUTTING_DOWN") {
		t.Errorf("OpenAI request while draining: %d %s", resp.StatusCode, body)
	}
	if h, err := c.Get(d.url + "/health"); err != nil {
		t.Errorf("health while draining: %v", err)
	} else {
		var hb api.Health
		_ = json.NewDecoder(h.Body).Decode(&hb)
		h.Body.Close()
		if h.StatusCode != http.StatusOK || hb.Status != "draining" {
			t.Errorf("health while draining: %d %+v", h.StatusCode, hb)
		}
	}

	if evs := <-longEvents; last(evs) != "error:"+api.CodeShuttingDown {
		t.Errorf("long task: ended with %s, want SHUTTING_DOWN", last(evs))
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		d.done <- err // for the cleanup
	case <-time.After(cfg.ShutdownGrace + 5*time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(stop); took < cfg.ShutdownGrace || took > cfg.ShutdownGrace+3*time.Second {
		t.Errorf("shutdown took %v with a grace of %v", took, cfg.ShutdownGrace)
	}
	// The queued, the stopped and the two refused.
	if got, err := testutil.GatherAndCount(d.Gatherer(), "llorch_tasks_total"); err != nil || got == 0 {
		t.Errorf("gatherer: %d series, %v", got, err)
	}
	mfs, _ := d.Gatherer().Gather()
	for _, mf := range mfs {
		if mf.GetName() != "llorch_tasks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "shutdown" && m.GetCounter().GetValue() != 4 {
				t.Errorf(`llorch_tasks_total{outcome="shutdown"} = %v, want 4`, m.GetCounter().GetValue())
			}
		}
	}
}

// A task that ends within the grace ends normally: the shutdown waits for
// it and no more.
func TestDaemonShutdownLetsShortTasksFinish(t *testing.T) {
	sim := startSim(t, simengine.Config{TokensPerSecond: 50})
	cfg := testConfig(t)
	cfg.ShutdownGrace = 10 * time.Second
	d := startDaemon(t, cfg)
	c := testClient(t)
	announceFile(t, cfg.RuntimeDir, "pool-0", sim.URL, 1)
	waitReady(t, c, d.url)
	if resp, body := post(t, c, d.url+"/v2/tasks", `{"task_id":"short","prompt":"x","max_tokens":15}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("short: %d %s", resp.StatusCode, body)
	}
	started, events := follow(t, c, d.url, "short")
	<-started
	stop := time.Now()
	d.cancel()
	if evs := <-events; last(evs) != "end" {
		t.Errorf("short task: %v, want it to end", evs)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
		d.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the task ended")
	}
	if took := time.Since(stop); took > 3*time.Second {
		t.Errorf("shutdown took %v for a task of 0.3 s", took)
	}
}

// llorch explain shows a draining node's pools as draining, not as a node
// that is not online.
func TestExplainSaysDraining(t *testing.T) {
	cfg := testConfig(t)
	cfg.CloudProfile = true
	d := startDaemon(t, cfg)
	c := testClient(t)
	for _, id := range []string{"n-up", "n-leaving"} {
		if resp, body := post(t, c, d.url+"/v2/nodes/register", registerBody(id, "http://10.0.0.1:9200")); resp.StatusCode != 200 {
			t.Fatalf("register %s: %d %s", id, resp.StatusCode, body)
		}
		if resp, body := post(t, c, d.url+"/v2/nodes/"+id+"/heartbeat", heartbeatBody(false)); resp.StatusCode != 200 {
			t.Fatalf("heartbeat %s: %d %s", id, resp.StatusCode, body)
		}
	}
	hb := strings.Replace(heartbeatBody(false), `"timestamp"`, `"draining":true,"timestamp"`, 1)
	if resp, body := post(t, c, d.url+"/v2/nodes/n-leaving/heartbeat", hb); resp.StatusCode != 200 {
		t.Fatalf("draining heartbeat: %d %s", resp.StatusCode, body)
	}
	resp, err := c.Get(d.url + "/v2/placement/explain")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex api.Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		t.Fatal(err)
	}
	if len(ex.Rejected) != 1 || ex.Rejected[0].NodeID != "n-leaving" || ex.Rejected[0].Reason != "node draining" {
		t.Errorf("rejected %+v, want n-leaving's pool as node draining", ex.Rejected)
	}
}
