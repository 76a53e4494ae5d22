package controlplane_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/registry"
)

const (
	timeout = 30 * time.Second
	token   = "s3cret-token"
)

var _ registry.Clock = (*clocktest.Clock)(nil)

type env struct {
	h     http.Handler
	reg   *registry.Registry
	clock *clocktest.Clock
	prom  *prometheus.Registry
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T, tok string) *env {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	clk := clocktest.New(t0)
	reg := registry.New(registry.Options{Timeout: timeout, Clock: clk, Logger: quiet})
	prom := prometheus.NewRegistry()
	prom.MustRegister(reg)
	h := controlplane.NewHandler(controlplane.Options{Registry: reg, Token: tok, Version: "v9.9.9", Gatherer: prom, Logger: quiet})
	return &env{h: h, reg: reg, clock: clk, prom: prom}
}

// do serves one request; tok "" sends no Authorization header.
func (e *env) do(method, target, body, tok string) *httptest.ResponseRecorder {
	return serve(e.h, method, target, body, tok, nil)
}

func serve(h http.Handler, method, target, body, tok string, hdr http.Header) *httptest.ResponseRecorder {
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func registerBody(id, address string) string {
	b, _ := json.Marshal(api.RegisterRequest{
		NodeID:    id,
		MachineID: "machine-" + id,
		Address:   address,
		Pools:     []string{"pool-0"},
		Capabilities: api.Capabilities{
			GPUs:          []api.GPUInfo{{DeviceID: 0, UUID: "GPU-0b1f", Name: "NVIDIA H200", VRAMTotalBytes: 150754820096, ComputeCapability: "9.0"}},
			CPUCores:      64,
			RAMTotalBytes: 1 << 40,
		},
		Version: "v1.0.0",
	})
	return string(b)
}

func heartbeatBody(draining bool) string {
	b, _ := json.Marshal(api.HeartbeatRequest{
		Timestamp: t0,
		Pools: []api.PoolState{{
			PoolID: "pool-0", Ready: true, Draining: draining, SlotsTotal: 4, SlotsFree: 2,
			Engine: "llamacpp", EngineVersion: "b4747", URL: "http://10.0.0.1:8081", Models: []string{"qwen2.5-0.5b"},
		}},
		GPUs: []api.GPUState{{DeviceID: 0, VRAMFreeBytes: 100 << 30, Utilization: 0.5}},
	})
	return string(b)
}

func (e *env) mustRegister(t *testing.T, id, address string) {
	t.Helper()
	if rec := e.do("POST", "/v2/nodes/register", registerBody(id, address), token); rec.Code != 200 {
		t.Fatalf("register %s = %d: %s", id, rec.Code, rec.Body)
	}
}

func (e *env) mustHeartbeat(t *testing.T, id string, draining bool) {
	t.Helper()
	if rec := e.do("POST", "/v2/nodes/"+id+"/heartbeat", heartbeatBody(draining), token); rec.Code != 200 {
		t.Fatalf("heartbeat %s = %d: %s", id, rec.Code, rec.Body)
	}
}

func decodeMap(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return m
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) api.Error {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not the envelope: %v", rec.Body, err)
	}
	if e.Code == "" || e.Message == "" {
		t.Errorf("error envelope %+v lacks code or message", e)
	}
	return e
}

func TestRegister(t *testing.T) {
	e := newEnv(t, token)
	rec := e.do("POST", "/v2/nodes/register", registerBody("n1", "http://10.0.0.1:9200"), token)
	if rec.Code != 200 {
		t.Fatalf("register = %d: %s", rec.Code, rec.Body)
	}
	want := map[string]any{"success": true, "message": "registered", "node_id": "n1"}
	if got := decodeMap(t, rec); !reflect.DeepEqual(got, want) {
		t.Errorf("register body = %v, want %v", got, want)
	}

	// Re-registering overwrites: still one node, with the new address.
	rec = e.do("POST", "/v2/nodes/register", registerBody("n1", "http://10.0.0.2:9200"), token)
	if rec.Code != 200 {
		t.Fatalf("re-register = %d: %s", rec.Code, rec.Body)
	}
	if n := e.reg.Len(); n != 1 {
		t.Errorf("%d nodes after re-registration, want 1", n)
	}
	n, ok := e.reg.Get("n1")
	if !ok || n.Address != "http://10.0.0.2:9200" || n.Status != api.StatusOnline {
		t.Errorf("node after re-registration = %+v", n)
	}
	if len(n.Capabilities.GPUs) != 1 || n.Capabilities.GPUs[0].ComputeCapability != "9.0" || n.MachineID != "machine-n1" {
		t.Errorf("registration fields not kept: %+v", n)
	}
}

func TestRegisterInvalid(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
	}{
		{"empty body", "", 400},
		{"invalid JSON", `{"node_id":`, 400},
		{"not an object", `["n1"]`, 400},
		{"trailing data", registerBody("n1", "http://h:1") + `{}`, 400},
		{"node_id wrong type", `{"node_id":5,"address":"http://h:1"}`, 400},
		{"pools wrong type", `{"node_id":"n1","address":"http://h:1","pools":"pool-0"}`, 400},
		{"cpu_cores wrong type", `{"node_id":"n1","address":"http://h:1","capabilities":{"cpu_cores":"64"}}`, 400},
		{"missing node_id", `{"address":"http://h:1"}`, 400},
		{"node_id with a slash", `{"node_id":"a/b","address":"http://h:1"}`, 400},
		{"missing address", `{"node_id":"n1"}`, 400},
		{"address not a URL", `{"node_id":"n1","address":"10.0.0.1:9200"}`, 400},
		{"invalid pool id", `{"node_id":"n1","address":"http://h:1","pools":[""]}`, 400},
		{"over the body limit", `{"node_id":"n1","address":"http://h:1","version":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, 413},
	}
	e := newEnv(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do("POST", "/v2/nodes/register", tt.body, "")
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if got := decodeError(t, rec); got.Code != api.CodeInvalidParams {
				t.Errorf("code = %q, want %s", got.Code, api.CodeInvalidParams)
			}
			if rec.Header().Get(api.CorrelationHeader) == "" {
				t.Error("no correlation id")
			}
		})
	}
	if n := e.reg.Len(); n != 0 {
		t.Errorf("%d nodes registered by invalid requests", n)
	}
	// Unknown fields are ignored (SPEC §8).
	if rec := e.do("POST", "/v2/nodes/register", `{"node_id":"n1","address":"http://h:1","future_field":{"x":1}}`, ""); rec.Code != 200 {
		t.Errorf("register with an unknown field = %d, want 200: %s", rec.Code, rec.Body)
	}
	want := fmt.Sprintf(`
# HELP llorch_node_registrations_total Node registrations received, by outcome.
# TYPE llorch_node_registrations_total counter
llorch_node_registrations_total{outcome="invalid"} %d
llorch_node_registrations_total{outcome="ok"} 1
`, len(tests))
	if err := testutil.GatherAndCompare(e.prom, strings.NewReader(want), "llorch_node_registrations_total"); err != nil {
		t.Error(err)
	}
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t, token)
	e.mustRegister(t, "n1", "http://10.0.0.1:9200")
	e.clock.Advance(5 * time.Second)

	rec := e.do("POST", "/v2/nodes/n1/heartbeat", heartbeatBody(false), token)
	if rec.Code != 200 {
		t.Fatalf("heartbeat = %d: %s", rec.Code, rec.Body)
	}
	want := map[string]any{"success": true, "next_heartbeat_ms": float64((timeout / 3).Milliseconds())}
	if got := decodeMap(t, rec); !reflect.DeepEqual(got, want) {
		t.Errorf("heartbeat body = %v, want %v", got, want)
	}
	n, _ := e.reg.Get("n1")
	if !n.LastHeartbeat.Equal(t0.Add(5*time.Second)) || len(n.Pools) != 1 || n.Pools[0].SlotsFree != 2 {
		t.Errorf("heartbeat not recorded: %+v", n)
	}

	tests := []struct {
		name       string
		target     string
		body       string
		wantStatus int
		wantCode   string
	}{
		{"unknown node", "/v2/nodes/ghost/heartbeat", heartbeatBody(false), 404, api.CodeNotFound},
		{"invalid JSON", "/v2/nodes/n1/heartbeat", `{"pools":[`, 400, api.CodeInvalidParams},
		{"wrong type", "/v2/nodes/n1/heartbeat", `{"pools":[{"pool_id":"p","slots_total":"4"}]}`, 400, api.CodeInvalidParams},
		{"free over total", "/v2/nodes/n1/heartbeat", `{"pools":[{"pool_id":"p","slots_total":1,"slots_free":2}]}`, 400, api.CodeInvalidParams},
		{"over the body limit", "/v2/nodes/n1/heartbeat", `{"pools":[],"x":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, 413, api.CodeInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do("POST", tt.target, tt.body, token)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if got := decodeError(t, rec); got.Code != tt.wantCode {
				t.Errorf("code = %q, want %q", got.Code, tt.wantCode)
			}
		})
	}
	const wantMetrics = `
# HELP llorch_node_heartbeats_total Node heartbeats received, by outcome.
# TYPE llorch_node_heartbeats_total counter
llorch_node_heartbeats_total{outcome="invalid"} 4
llorch_node_heartbeats_total{outcome="ok"} 1
llorch_node_heartbeats_total{outcome="unknown_node"} 1
`
	if err := testutil.GatherAndCompare(e.prom, strings.NewReader(wantMetrics), "llorch_node_heartbeats_total"); err != nil {
		t.Error(err)
	}
}

func TestDeregister(t *testing.T) {
	e := newEnv(t, token)
	e.mustRegister(t, "n1", "http://10.0.0.1:9200")
	rec := e.do("DELETE", "/v2/nodes/n1", "", token)
	if rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("DELETE = %d %q, want 204 with no body", rec.Code, rec.Body)
	}
	rec = e.do("DELETE", "/v2/nodes/n1", "", token)
	if rec.Code != 404 {
		t.Fatalf("second DELETE = %d, want 404", rec.Code)
	}
	if got := decodeError(t, rec); got.Code != api.CodeNotFound {
		t.Errorf("code = %q, want %s", got.Code, api.CodeNotFound)
	}
	if rec.Header().Get(api.CorrelationHeader) == "" {
		t.Error("404 without correlation id")
	}
	if rec := e.do("POST", "/v2/nodes/n1/heartbeat", heartbeatBody(false), token); rec.Code != 404 {
		t.Errorf("heartbeat after deregistration = %d, want 404", rec.Code)
	}
}

func TestListNodes(t *testing.T) {
	e := newEnv(t, token)
	for _, id := range []string{"n3", "n1", "n2"} {
		e.mustRegister(t, id, "http://"+id+".example:9200")
	}
	e.clock.Advance(20 * time.Second)
	e.mustHeartbeat(t, "n1", false)
	e.mustHeartbeat(t, "n2", true) // all pools draining: node draining
	e.clock.Advance(15 * time.Second)
	if got := e.reg.ExpireStale(); !reflect.DeepEqual(got, []string{"n3"}) {
		t.Fatalf("ExpireStale = %v, want [n3]", got)
	}

	type row struct {
		ID, Status string
		AgeMS      int64
	}
	tests := []struct {
		query      string
		wantStatus int
		want       []row
	}{
		{"", 200, []row{{"n1", "online", 15000}, {"n2", "draining", 15000}}},
		{"?status=active", 200, []row{{"n1", "online", 15000}, {"n2", "draining", 15000}}},
		{"?status=all", 200, []row{{"n1", "online", 15000}, {"n2", "draining", 15000}, {"n3", "offline", 35000}}},
		{"?status=bogus", 400, nil},
	}
	for _, tt := range tests {
		t.Run("query "+tt.query, func(t *testing.T) {
			rec := e.do("GET", "/v2/nodes"+tt.query, "", token)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus != 200 {
				if got := decodeError(t, rec); got.Code != api.CodeInvalidParams {
					t.Errorf("code = %q, want %s", got.Code, api.CodeInvalidParams)
				}
				return
			}
			var list api.NodeList
			if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
				t.Fatal(err)
			}
			var got []row
			for _, n := range list.Nodes {
				got = append(got, row{n.NodeID, n.Status, n.HeartbeatAgeMS})
			}
			if !reflect.DeepEqual(got, tt.want) || list.Count != len(tt.want) {
				t.Errorf("nodes = %v count %d, want %v count %d", got, list.Count, tt.want, len(tt.want))
			}
		})
	}

	// The wire shape of one NodeInfo (SPEC §3).
	var raw struct {
		Nodes []map[string]any `json:"nodes"`
		Count int              `json:"count"`
	}
	if err := json.Unmarshal(e.do("GET", "/v2/nodes", "", token).Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	n1 := raw.Nodes[0]
	for _, k := range []string{"node_id", "machine_id", "address", "status", "registered_at", "last_heartbeat", "heartbeat_age_ms", "capabilities", "pools"} {
		if _, ok := n1[k]; !ok {
			t.Errorf("NodeInfo lacks %q", k)
		}
	}
	if n1["registered_at"] != "2026-03-01T12:00:00Z" || n1["last_heartbeat"] != "2026-03-01T12:00:20Z" {
		t.Errorf("times = %v, %v; want RFC 3339 of the fake clock", n1["registered_at"], n1["last_heartbeat"])
	}
	pools, _ := n1["pools"].([]any)
	if len(pools) != 1 || pools[0].(map[string]any)["pool_id"] != "pool-0" {
		t.Errorf("pools = %v, want the heartbeat's snapshot", n1["pools"])
	}
}

func TestListNodesEmpty(t *testing.T) {
	e := newEnv(t, "")
	rec := e.do("GET", "/v2/nodes", "", "")
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != 200 || got != `{"nodes":[],"count":0}` {
		t.Errorf("GET /v2/nodes = %d %s, want 200 {\"nodes\":[],\"count\":0}", rec.Code, got)
	}
	rec = e.do("GET", "/v2/sd", "", "")
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != 200 || got != `[]` {
		t.Errorf("GET /v2/sd = %d %s, want 200 []", rec.Code, got)
	}
}

func TestGetNode(t *testing.T) {
	e := newEnv(t, token)
	e.mustRegister(t, "n1", "http://10.0.0.1:9200")
	rec := e.do("GET", "/v2/nodes/n1", "", token)
	if rec.Code != 200 {
		t.Fatalf("GET n1 = %d: %s", rec.Code, rec.Body)
	}
	var n api.NodeInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &n); err != nil {
		t.Fatal(err)
	}
	if n.NodeID != "n1" || n.Status != api.StatusOnline || n.Address != "http://10.0.0.1:9200" || !n.RegisteredAt.Equal(t0) {
		t.Errorf("node = %+v", n)
	}
	rec = e.do("GET", "/v2/nodes/ghost", "", token)
	if rec.Code != 404 {
		t.Fatalf("GET ghost = %d, want 404", rec.Code)
	}
	if got := decodeError(t, rec); got.Code != api.CodeNotFound {
		t.Errorf("code = %q", got.Code)
	}
}

func TestServiceDiscovery(t *testing.T) {
	e := newEnv(t, token)
	nodes := []struct{ id, address, target string }{
		{"a-port", "http://10.0.0.1:9200", "10.0.0.1:9200"},
		{"b-http", "http://agent-b.example", "agent-b.example:80"},
		{"c-https", "https://agent-c.example/", "agent-c.example:443"},
		{"d-ipv6", "http://[fd00::1]", "[fd00::1]:80"},
		{"e-ipv6-port", "https://[fd00::2]:9443", "[fd00::2]:9443"},
	}
	for _, n := range nodes {
		e.mustRegister(t, n.id, n.address)
	}
	// An offline node stays listed, so its failing scrape is visible.
	e.clock.Advance(timeout + time.Second)
	e.reg.ExpireStale()

	rec := e.do("GET", "/v2/sd", "", token)
	if rec.Code != 200 {
		t.Fatalf("GET /v2/sd = %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var groups []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups) != len(nodes) {
		t.Fatalf("%d target groups, want %d: %s", len(groups), len(nodes), rec.Body)
	}
	for i, n := range nodes {
		g := groups[i]
		if got := keysOf(g); !reflect.DeepEqual(got, []string{"labels", "targets"}) {
			t.Errorf("group keys = %v, want labels and targets", got)
		}
		if got, want := g["targets"], []any{n.target}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: targets = %v, want %v", n.id, got, want)
		}
		labels, _ := g["labels"].(map[string]any)
		if labels["node_id"] != n.id || labels["machine_id"] != "machine-"+n.id {
			t.Errorf("%s: labels = %v", n.id, labels)
		}
		for k := range labels {
			if k != "node_id" && k != "machine_id" && !strings.HasPrefix(k, "__meta_") {
				t.Errorf("%s: unexpected target label %q: only node_id, machine_id and __meta_* are allowed", n.id, k)
			}
		}
	}
}

func keysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestHomeProfile(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	h := controlplane.NewHandler(controlplane.Options{Version: "v9.9.9", Gatherer: prometheus.NewRegistry(), Logger: quiet})
	tests := []struct {
		method, target, body string
		want                 int
	}{
		{"POST", "/v2/nodes/register", registerBody("n1", "http://h:1"), 503},
		{"POST", "/v2/nodes/n1/heartbeat", heartbeatBody(false), 503},
		{"DELETE", "/v2/nodes/n1", "", 503},
		{"GET", "/v2/nodes/n1", "", 503},
		{"GET", "/v2/nodes", "", 503},
		{"GET", "/v2/sd", "", 503},
		{"GET", "/health", "", 200},
		{"GET", "/metrics", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			rec := serve(h, tt.method, tt.target, tt.body, "", nil)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == 503 {
				if got := decodeError(t, rec); got.Code != api.CodeNodeUnavailable {
					t.Errorf("code = %q, want %s", got.Code, api.CodeNodeUnavailable)
				}
			}
		})
	}
}

func TestAuthAndCorrelation(t *testing.T) {
	e := newEnv(t, token)
	e.mustRegister(t, "n1", "http://10.0.0.1:9200")
	tests := []struct {
		name, method, target, body, tok string
		want                            int
	}{
		{"register without token", "POST", "/v2/nodes/register", registerBody("n2", "http://h:1"), "", 401},
		{"register with wrong token", "POST", "/v2/nodes/register", registerBody("n2", "http://h:1"), "s3cret-tokeN", 401},
		{"heartbeat without token", "POST", "/v2/nodes/n1/heartbeat", heartbeatBody(false), "", 401},
		{"delete without token", "DELETE", "/v2/nodes/n1", "", "", 401},
		{"get node without token", "GET", "/v2/nodes/n1", "", "", 401},
		{"list without token", "GET", "/v2/nodes", "", "", 401},
		{"sd without token", "GET", "/v2/sd", "", "", 401},
		{"unknown route without token", "GET", "/nope", "", "", 401},
		{"health open", "GET", "/health", "", "", 200},
		{"metrics open", "GET", "/metrics", "", "", 200},
		{"list with token", "GET", "/v2/nodes", "", token, 200},
		{"sd with token", "GET", "/v2/sd", "", token, 200},
		{"unknown route with token", "GET", "/nope", "", token, 404},
		{"register with token", "POST", "/v2/nodes/register", registerBody("n2", "http://h:1"), token, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, sent := range []string{"", "trace-abc-123"} {
				var hdr http.Header
				if sent != "" {
					hdr = http.Header{api.CorrelationHeader: {sent}}
				}
				rec := serve(e.h, tt.method, tt.target, tt.body, tt.tok, hdr)
				if rec.Code != tt.want {
					t.Fatalf("status = %d, want %d: %s", rec.Code, tt.want, rec.Body)
				}
				got := rec.Header().Get(api.CorrelationHeader)
				switch {
				case sent == "" && got == "":
					t.Error("no correlation id generated")
				case sent != "" && got != sent:
					t.Errorf("correlation id = %q, want the echoed %q", got, sent)
				}
				if tt.want == 401 {
					if rec.Header().Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
					if got := decodeError(t, rec); got.Code != api.CodeUnauthorized {
						t.Errorf("code = %q, want %s", got.Code, api.CodeUnauthorized)
					}
				}
			}
		})
	}
	if e.reg.Len() != 2 {
		t.Errorf("%d nodes, want 2: unauthenticated registrations must not land", e.reg.Len())
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t, "")
	e.mustRegister(t, "n1", "http://10.0.0.1:9200")
	rec := e.do("GET", "/health", "", "")
	want := map[string]any{"status": "ok", "version": "v9.9.9"}
	if got := decodeMap(t, rec); rec.Code != 200 || !reflect.DeepEqual(got, want) {
		t.Errorf("/health = %d %v, want 200 %v", rec.Code, got, want)
	}
	rec = e.do("GET", "/metrics", "", "")
	for _, s := range []string{`llorch_nodes{status="online"} 1`, `llorch_node_registrations_total{outcome="ok"} 1`, `llorch_node_heartbeat_age_seconds{node_id="n1"} 0`} {
		if !strings.Contains(rec.Body.String(), s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
}

func TestConcurrentHeartbeats(t *testing.T) {
	const (
		nodes   = 100
		workers = 16
	)
	e := newEnv(t, token)
	for i := 0; i < nodes; i++ {
		e.mustRegister(t, fmt.Sprintf("node-%03d", i), fmt.Sprintf("http://10.0.%d.%d:9200", i/250, i%250+1))
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < nodes; i++ {
				id := fmt.Sprintf("node-%03d", (i+w*7)%nodes)
				// Readers race with the writers too.
				if i%10 == 0 {
					if rec := e.do("GET", "/v2/nodes", "", token); rec.Code != 200 {
						t.Errorf("list = %d", rec.Code)
					}
				}
				rec := e.do("POST", "/v2/nodes/"+id+"/heartbeat", heartbeatBody(w%2 == 0), token)
				if rec.Code != 200 {
					t.Errorf("heartbeat %s = %d: %s", id, rec.Code, rec.Body)
				}
			}
		}()
	}
	wg.Wait()
	if err := testutil.GatherAndCompare(e.prom, strings.NewReader(fmt.Sprintf(`
# HELP llorch_node_heartbeats_total Node heartbeats received, by outcome.
# TYPE llorch_node_heartbeats_total counter
llorch_node_heartbeats_total{outcome="invalid"} 0
llorch_node_heartbeats_total{outcome="ok"} %d
llorch_node_heartbeats_total{outcome="unknown_node"} 0
`, nodes*workers)), "llorch_node_heartbeats_total"); err != nil {
		t.Error(err)
	}
	if got := len(e.reg.List(false)); got != nodes {
		t.Errorf("%d nodes listed, want %d", got, nodes)
	}
}
