package agent_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

const token = "s3cret-token"

// newTestHandler serves a table with pool-0 ready (one replica) and pool-1
// declared but not ready, its metrics on a fresh registry.
func newTestHandler(t *testing.T, tok string) (http.Handler, *pool.Table) {
	t.Helper()
	tab := pool.NewTable([]string{"pool-0", "pool-1"})
	tab.Upsert("/rt/pool-0_r0.json", handoff.Handoff{
		PoolID: "pool-0", Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081",
		SlotsTotal: 4, SlotsFree: 3, Model: handoff.Model{ID: "qwen2.5-0.5b"},
	})
	tab.SetLastError("pool-1", "engine exited: status 1")
	reg := prometheus.NewRegistry()
	reg.MustRegister(exporter.New(map[string]exporter.Collector{"pools": exporter.NewPoolsCollector(tab)}, slog.New(slog.DiscardHandler)))
	return agent.NewHandler(agent.HandlerOptions{
		Pools:    tab,
		Token:    tok,
		Version:  "v1.2.3",
		Gatherer: reg,
		Logger:   slog.New(slog.DiscardHandler),
	}), tab
}

func serve(h http.Handler, method, target, body, tok string, hdr map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) api.Error {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not the JSON envelope: %v", rec.Body.String(), err)
	}
	if e.Code == "" || e.Message == "" {
		t.Errorf("error envelope %+v lacks code or message", e)
	}
	return e
}

func keys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name       string
		tokenSet   string // the agent's token
		method     string
		target     string
		body       string
		sendToken  string
		wantStatus int
		wantCode   string // error envelope code, when an error is expected
		check      func(t *testing.T, rec *httptest.ResponseRecorder, tab *pool.Table)
	}{
		{
			name: "health", method: "GET", target: "/health", wantStatus: 200,
			check: func(t *testing.T, rec *httptest.ResponseRecorder, _ *pool.Table) {
				var got map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if want := map[string]any{"status": "ok", "version": "v1.2.3"}; !reflect.DeepEqual(got, want) {
					t.Errorf("body = %v, want %v", got, want)
				}
			},
		},
		{name: "health needs no token", tokenSet: token, method: "GET", target: "/health", wantStatus: 200},
		{
			name: "metrics needs no token", tokenSet: token, method: "GET", target: "/metrics", wantStatus: 200,
			check: func(t *testing.T, rec *httptest.ResponseRecorder, _ *pool.Table) {
				body := rec.Body.String()
				for _, want := range []string{
					`llorch_pool_ready{pool_id="pool-0"} 1`,
					`llorch_pool_ready{pool_id="pool-1"} 0`,
					`llorch_pool_slots{pool_id="pool-0"} 4`,
					`llorch_pool_slots_free{pool_id="pool-0"} 3`,
				} {
					if !strings.Contains(body, want) {
						t.Errorf("/metrics lacks %q:\n%s", want, body)
					}
				}
			},
		},
		{
			name: "status of a ready pool", method: "GET", target: "/pools/pool-0/status", wantStatus: 200,
			check: func(t *testing.T, rec *httptest.ResponseRecorder, _ *pool.Table) {
				var got map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				// SPEC §4 fields, plus the model list and the replicas.
				want := map[string]any{
					"pool_id": "pool-0", "live": true, "ready": true, "draining": false, "stopped": false,
					"slots_total": 4.0, "slots_free": 3.0, "engine": "llamacpp",
					"engine_version": "b4747", "url": "http://127.0.0.1:8081", "last_error": "",
					"models": []any{"qwen2.5-0.5b"},
					"replicas": []any{map[string]any{
						"replica_id": "r0", "url": "http://127.0.0.1:8081", "ready": true,
						"slots_total": 4.0, "slots_free": 3.0, "engine_version": "b4747",
					}},
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("body = %v\nwant   %v", got, want)
				}
			},
		},
		{
			name: "status of a pool that is not ready", tokenSet: token, sendToken: token, method: "GET", target: "/pools/pool-1/status", wantStatus: 200,
			check: func(t *testing.T, rec *httptest.ResponseRecorder, _ *pool.Table) {
				var got map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				for _, k := range []string{"pool_id", "live", "ready", "draining", "slots_total", "slots_free", "engine", "engine_version", "url", "last_error"} {
					if _, ok := got[k]; !ok {
						t.Errorf("status lacks %q: %v", k, keys(got))
					}
				}
				if _, ok := got["replicas"]; ok {
					t.Errorf("a pool without engines lists replicas: %v", got["replicas"])
				}
				if got["ready"] != false || got["live"] != false || got["slots_total"] != 0.0 || got["last_error"] != "engine exited: status 1" {
					t.Errorf("body = %v", got)
				}
			},
		},
		{name: "status of an unknown pool", method: "GET", target: "/pools/nope/status", wantStatus: 404, wantCode: api.CodeNotFound},
		{
			name: "drain without body", method: "POST", target: "/pools/pool-0/drain", wantStatus: 202,
			check: func(t *testing.T, rec *httptest.ResponseRecorder, tab *pool.Table) {
				var got api.PoolStatus
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if !got.Draining || got.PoolID != "pool-0" {
					t.Errorf("drain answered %+v, want pool-0 draining", got)
				}
				if st, _ := tab.Status("pool-0"); !st.Draining {
					t.Error("pool-0 not draining in the table")
				}
				if st, _ := tab.Status("pool-1"); st.Draining {
					t.Error("draining pool-0 drained pool-1 too")
				}
			},
		},
		{
			name: "drain with deadline", tokenSet: token, sendToken: token, method: "POST", target: "/pools/pool-1/drain", body: `{"deadline_ms":30000}`, wantStatus: 202,
			check: func(t *testing.T, _ *httptest.ResponseRecorder, tab *pool.Table) {
				if st, _ := tab.Status("pool-1"); !st.Draining {
					t.Error("pool-1 not draining in the table")
				}
			},
		},
		{name: "drain with unknown fields", method: "POST", target: "/pools/pool-0/drain", body: `{"deadline_ms":0,"reason":"maintenance"}`, wantStatus: 202},
		{name: "drain with bad JSON", method: "POST", target: "/pools/pool-0/drain", body: `{"deadline_ms":`, wantStatus: 400, wantCode: api.CodeInvalidParams, check: notDrained},
		{name: "drain with wrong type", method: "POST", target: "/pools/pool-0/drain", body: `{"deadline_ms":"soon"}`, wantStatus: 400, wantCode: api.CodeInvalidParams, check: notDrained},
		{name: "drain with negative deadline", method: "POST", target: "/pools/pool-0/drain", body: `{"deadline_ms":-1}`, wantStatus: 400, wantCode: api.CodeInvalidParams, check: notDrained},
		{name: "drain of an unknown pool", method: "POST", target: "/pools/nope/drain", wantStatus: 404, wantCode: api.CodeNotFound},
		{name: "drain needs POST", method: "GET", target: "/pools/pool-0/drain", wantStatus: 404, wantCode: api.CodeNotFound, check: notDrained},
		{name: "pool list", tokenSet: token, sendToken: token, method: "GET", target: "/pools", wantStatus: 200},
		{name: "status without token", tokenSet: token, method: "GET", target: "/pools/pool-0/status", wantStatus: 401, wantCode: api.CodeUnauthorized},
		{name: "status with wrong token", tokenSet: token, sendToken: "s3cret-tokem", method: "GET", target: "/pools/pool-0/status", wantStatus: 401, wantCode: api.CodeUnauthorized},
		{name: "drain without token", tokenSet: token, method: "POST", target: "/pools/pool-0/drain", wantStatus: 401, wantCode: api.CodeUnauthorized, check: notDrained},
		{name: "pool list without token", tokenSet: token, method: "GET", target: "/pools", wantStatus: 401, wantCode: api.CodeUnauthorized},
		{name: "unknown route", method: "GET", target: "/nope", wantStatus: 404, wantCode: api.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tab := newTestHandler(t, tt.tokenSet)
			rec := serve(h, tt.method, tt.target, tt.body, tt.sendToken, nil)
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s = %d, want %d; body %s", tt.method, tt.target, rec.Code, tt.wantStatus, rec.Body)
			}
			if rec.Header().Get(api.CorrelationHeader) == "" {
				t.Errorf("response lacks %s", api.CorrelationHeader)
			}
			if tt.wantCode != "" {
				if e := decodeError(t, rec); e.Code != tt.wantCode {
					t.Errorf("error code = %q, want %q", e.Code, tt.wantCode)
				}
			}
			if tt.wantStatus == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tt.check != nil {
				tt.check(t, rec, tab)
			}
		})
	}
}

func notDrained(t *testing.T, _ *httptest.ResponseRecorder, tab *pool.Table) {
	t.Helper()
	for _, p := range tab.Snapshot() {
		if p.Draining {
			t.Errorf("pool %s drained by a refused request", p.PoolID)
		}
	}
}

func TestHandlerCorrelationID(t *testing.T) {
	h, _ := newTestHandler(t, token)
	for _, target := range []string{"/health", "/pools/pool-0/status", "/metrics", "/nope"} {
		rec := serve(h, "GET", target, "", "", map[string]string{api.CorrelationHeader: "req-42"})
		if got := rec.Header().Get(api.CorrelationHeader); got != "req-42" {
			t.Errorf("GET %s: %s = %q, want the echoed req-42", target, api.CorrelationHeader, got)
		}
	}
	a := serve(h, "GET", "/health", "", "", nil).Header().Get(api.CorrelationHeader)
	b := serve(h, "GET", "/health", "", "", nil).Header().Get(api.CorrelationHeader)
	if a == "" || a == b {
		t.Errorf("generated correlation ids %q and %q: want distinct non-empty ids", a, b)
	}
}
