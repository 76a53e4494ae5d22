package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorded is one request a fake control plane received.
type recorded struct {
	method, path, query string
	auth, contentType   string
	body                []byte
}

// fakeControlPlane answers every request with status and body, recording
// what it received.
type fakeControlPlane struct {
	mu     sync.Mutex
	reqs   []recorded
	status int
	body   string
}

func (f *fakeControlPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{
		method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery,
		auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type"), body: b,
	})
	status, body := f.status, f.body
	f.mu.Unlock()
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (f *fakeControlPlane) only(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("control plane got %d requests, want 1", len(f.reqs))
	}
	return f.reqs[0]
}

func newFake(t *testing.T, status int, body string) (*fakeControlPlane, *Client) {
	t.Helper()
	f := &fakeControlPlane{status: status, body: body}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, &Client{BaseURL: srv.URL + "/", Token: "tok-123", HTTP: srv.Client()}
}

func TestClientRequests(t *testing.T) {
	hb := HeartbeatRequest{
		Timestamp: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		Pools:     []PoolState{{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 4, URL: "http://127.0.0.1:8081", Models: []string{"m"}}},
		GPUs:      []GPUState{{DeviceID: 0, VRAMFreeBytes: 1 << 30, Utilization: 0.5}},
	}
	cases := []struct {
		name       string
		status     int
		respBody   string
		call       func(context.Context, *Client) (any, error)
		wantMethod string
		wantPath   string
		wantQuery  string
		wantBody   any // the JSON the server must get, decoded into the same type; nil means no body
		wantResult any
	}{
		{
			name: "register", status: http.StatusOK, respBody: `{"success":true,"message":"registered","node_id":"gpu-node-1"}`,
			call:       func(ctx context.Context, c *Client) (any, error) { return nil, c.Register(ctx, wantRegister) },
			wantMethod: http.MethodPost, wantPath: "/v2/nodes/register", wantBody: &wantRegister,
		},
		{
			name: "heartbeat", status: http.StatusOK, respBody: `{"success":true,"next_heartbeat_ms":10000,"extra":1}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Heartbeat(ctx, "gpu-node-1", hb)
			},
			wantMethod: http.MethodPost, wantPath: "/v2/nodes/gpu-node-1/heartbeat", wantBody: &hb,
			wantResult: HeartbeatResponse{Success: true, NextHeartbeatMS: 10000},
		},
		{
			name: "heartbeat escapes the node id", status: http.StatusOK, respBody: `{"success":true}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Heartbeat(ctx, "a/b c", hb)
			},
			wantMethod: http.MethodPost, wantPath: "/v2/nodes/a%2Fb%20c/heartbeat", wantBody: &hb,
			wantResult: HeartbeatResponse{Success: true},
		},
		{
			name: "deregister", status: http.StatusNoContent,
			call:       func(ctx context.Context, c *Client) (any, error) { return nil, c.Deregister(ctx, "gpu-node-1") },
			wantMethod: http.MethodDelete, wantPath: "/v2/nodes/gpu-node-1",
		},
		{
			name: "nodes", status: http.StatusOK,
			respBody:   `{"nodes":[{"node_id":"n1","status":"online","registered_at":"2025-06-01T12:00:00Z","last_heartbeat":"2025-06-01T12:00:10Z","heartbeat_age_ms":5,"pools":[{"pool_id":"pool-0","slots_total":2,"slots_free":1}]}],"count":1}`,
			call:       func(ctx context.Context, c *Client) (any, error) { return c.Nodes(ctx, false) },
			wantMethod: http.MethodGet, wantPath: "/v2/nodes",
			wantResult: NodeList{Count: 1, Nodes: []NodeInfo{{
				NodeID: "n1", Status: StatusOnline,
				RegisteredAt:   time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
				LastHeartbeat:  time.Date(2025, 6, 1, 12, 0, 10, 0, time.UTC),
				HeartbeatAgeMS: 5,
				Pools:          []PoolState{{PoolID: "pool-0", SlotsTotal: 2, SlotsFree: 1}},
			}}},
		},
		{
			name: "nodes all", status: http.StatusOK, respBody: `{"nodes":[],"count":0}`,
			call:       func(ctx context.Context, c *Client) (any, error) { return c.Nodes(ctx, true) },
			wantMethod: http.MethodGet, wantPath: "/v2/nodes", wantQuery: "status=all",
			wantResult: NodeList{Nodes: []NodeInfo{}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, tc.status, tc.respBody)
			got, err := tc.call(t.Context(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if tc.wantResult != nil && !reflect.DeepEqual(got, tc.wantResult) {
				t.Errorf("result:\n got %#v\nwant %#v", got, tc.wantResult)
			}
			r := f.only(t)
			if r.method != tc.wantMethod || r.path != tc.wantPath || r.query != tc.wantQuery {
				t.Errorf("request %s %s?%s, want %s %s?%s", r.method, r.path, r.query, tc.wantMethod, tc.wantPath, tc.wantQuery)
			}
			if r.auth != "Bearer tok-123" {
				t.Errorf("Authorization = %q, want the bearer token", r.auth)
			}
			if tc.wantBody == nil {
				if len(r.body) != 0 || r.contentType != "" {
					t.Errorf("body %q with Content-Type %q, want none", r.body, r.contentType)
				}
				return
			}
			if r.contentType != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", r.contentType)
			}
			gotBody := reflect.New(reflect.TypeOf(tc.wantBody).Elem()).Interface()
			if err := Decode(strings.NewReader(string(r.body)), MaxBodyBytes, gotBody); err != nil {
				t.Fatalf("server could not decode the body %s: %v", r.body, err)
			}
			if !reflect.DeepEqual(gotBody, tc.wantBody) {
				t.Errorf("body:\n got %#v\nwant %#v", gotBody, tc.wantBody)
			}
		})
	}
}

func TestClientNoToken(t *testing.T) {
	f, c := newFake(t, http.StatusNoContent, "")
	c.Token = ""
	if err := c.Deregister(t.Context(), "n1"); err != nil {
		t.Fatal(err)
	}
	if r := f.only(t); r.auth != "" {
		t.Errorf("Authorization = %q sent without a token", r.auth)
	}
}

func TestClientErrors(t *testing.T) {
	calls := map[string]func(context.Context, *Client) error{
		"register": func(ctx context.Context, c *Client) error { return c.Register(ctx, wantRegister) },
		"heartbeat": func(ctx context.Context, c *Client) error {
			_, err := c.Heartbeat(ctx, "n1", HeartbeatRequest{})
			return err
		},
		"deregister": func(ctx context.Context, c *Client) error { return c.Deregister(ctx, "n1") },
		"nodes": func(ctx context.Context, c *Client) error {
			_, err := c.Nodes(ctx, true)
			return err
		},
	}
	cases := []struct {
		name         string
		status       int
		body         string
		wantNotFound bool
		wantIn       []string
	}{
		{"404 envelope", http.StatusNotFound, `{"code":"NOT_FOUND","message":"unknown node n1"}`, true,
			[]string{"404", "NOT_FOUND", "unknown node n1"}},
		{"404 empty", http.StatusNotFound, "", true, []string{"404"}},
		{"500 envelope", http.StatusInternalServerError, `{"code":"INTERNAL","message":"registry exploded","retriable":true}`, false,
			[]string{"500", "INTERNAL", "registry exploded"}},
		{"500 not JSON", http.StatusInternalServerError, "<html>oops</html>", false, []string{"500"}},
		{"401 envelope", http.StatusUnauthorized, `{"code":"UNAUTHORIZED","message":"missing or wrong bearer token"}`, false,
			[]string{"401", "UNAUTHORIZED", "missing or wrong bearer token"}},
		{"503 envelope", http.StatusServiceUnavailable, `{"code":"NODE_UNAVAILABLE","message":"cloud profile is off"}`, false,
			[]string{"503", "NODE_UNAVAILABLE", "cloud profile is off"}},
		{"400 envelope", http.StatusBadRequest, `{"code":"INVALID_PARAMS","message":"node_id is required"}`, false,
			[]string{"400", "INVALID_PARAMS", "node_id is required"}},
	}
	for _, tc := range cases {
		for cname, call := range calls {
			t.Run(tc.name+"/"+cname, func(t *testing.T) {
				_, c := newFake(t, tc.status, tc.body)
				err := call(t.Context(), c)
				if err == nil {
					t.Fatal("no error")
				}
				if got := errors.Is(err, ErrNotFound); got != tc.wantNotFound {
					t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", err, got, tc.wantNotFound)
				}
				for _, s := range tc.wantIn {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "tok-123") {
					t.Errorf("error %q reveals the token", err)
				}
			})
		}
	}
}

func TestClientBadResponse(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":   "ok",
		"wrong type": `{"success":"yes"}`,
		"empty":      "",
	} {
		t.Run(name, func(t *testing.T) {
			_, c := newFake(t, http.StatusOK, body)
			if _, err := c.Heartbeat(t.Context(), "n1", HeartbeatRequest{}); err == nil || !strings.Contains(err.Error(), "decode response") {
				t.Fatalf("Heartbeat with response %q: err = %v, want a decode error", body, err)
			}
		})
	}
}

func TestClientTransportErrors(t *testing.T) {
	t.Run("canceled context", func(t *testing.T) {
		f, c := newFake(t, http.StatusOK, `{"success":true}`)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := c.Register(ctx, wantRegister)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Register with a canceled context: err = %v, want context.Canceled", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.reqs) != 0 {
			t.Errorf("server got %d requests after cancel", len(f.reqs))
		}
	})
	t.Run("server gone", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c := &Client{BaseURL: url}
		err := c.Register(t.Context(), wantRegister)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Register to a closed server: err = %v, want a transport error", err)
		}
	})
	t.Run("bad base URL", func(t *testing.T) {
		c := &Client{BaseURL: "://nope"}
		if err := c.Deregister(t.Context(), "n1"); err == nil {
			t.Fatal("Deregister with a malformed base URL: no error")
		}
	})
}

// A call that cannot connect moves to the next control plane, and later
// calls stay there; an answer, even an error, does not move it.
func TestClientFailsOverOnConnectionErrors(t *testing.T) {
	var hits [2]atomic.Int32
	servers := make([]*httptest.Server, 2)
	for i := range servers {
		servers[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			if r.URL.Path == "/v2/nodes/missing/heartbeat" {
				WriteError(w, http.StatusNotFound, Error{Code: CodeNotFound, Message: "unknown node"})
				return
			}
			WriteJSON(w, http.StatusOK, HeartbeatResponse{Success: true})
		}))
		defer servers[i].Close()
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there now

	c := NewClientFor(deadURL+", "+servers[0].URL+"/,"+servers[1].URL, "", nil)
	if c.BaseURL != deadURL || len(c.Alternates) != 2 {
		t.Fatalf("NewClientFor: base %q alternates %v", c.BaseURL, c.Alternates)
	}
	ctx := context.Background()
	if _, err := c.Heartbeat(ctx, "n1", HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat with the first control plane down: %v", err)
	}
	if c.Current() != servers[0].URL || hits[0].Load() != 1 {
		t.Fatalf("current %q, hits %d; want the second URL", c.Current(), hits[0].Load())
	}
	// A 404 is an answer: it stays.
	if _, err := c.Heartbeat(ctx, "missing", HeartbeatRequest{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("heartbeat of an unknown node: %v, want ErrNotFound", err)
	}
	if c.Current() != servers[0].URL {
		t.Fatalf("moved to %q after an answer", c.Current())
	}
	servers[0].Close()
	if _, err := c.Heartbeat(ctx, "n1", HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat after the second went down: %v", err)
	}
	if c.Current() != servers[1].URL || hits[1].Load() != 1 {
		t.Fatalf("current %q; want the third URL", c.Current())
	}
	servers[1].Close()
	if _, err := c.Heartbeat(ctx, "n1", HeartbeatRequest{}); err == nil {
		t.Fatal("every control plane down: no error")
	}
}
