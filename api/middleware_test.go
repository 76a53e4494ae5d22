package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestWithCorrelationID(t *testing.T) {
	cases := []struct {
		name     string
		header   []string // values to set; nil sends none
		wantEcho string   // "" means a fresh id is expected
	}{
		{name: "echoes a given id", header: []string{"req-abc-123"}, wantEcho: "req-abc-123"},
		{name: "echoes a uuid", header: []string{"0f8fad5b-d9cb-469f-a165-70867728950e"}, wantEcho: "0f8fad5b-d9cb-469f-a165-70867728950e"},
		{name: "echoes an id at the length limit", header: []string{strings.Repeat("c", maxCorrelationLen)}, wantEcho: strings.Repeat("c", maxCorrelationLen)},
		{name: "absent", header: nil},
		{name: "empty", header: []string{""}},
		{name: "too long", header: []string{strings.Repeat("c", maxCorrelationLen+1)}},
		{name: "contains LF", header: []string{"abc\ndef"}},
		{name: "contains CR", header: []string{"abc\rdef"}},
		{name: "header injection", header: []string{"x\r\nSet-Cookie: a=b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen string
			h := WithCorrelationID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = r.Header.Get(CorrelationHeader)
				w.WriteHeader(http.StatusTeapot)
			}))
			r := httptest.NewRequest(http.MethodGet, "/v2/nodes", nil)
			for _, v := range tc.header {
				r.Header[CorrelationHeader] = []string{v}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get(CorrelationHeader)
			if w.Code != http.StatusTeapot {
				t.Fatalf("next handler not called: status %d", w.Code)
			}
			if tc.wantEcho != "" {
				if got != tc.wantEcho {
					t.Errorf("response id = %q, want echo %q", got, tc.wantEcho)
				}
			} else if !hex32.MatchString(got) {
				t.Errorf("response id = %q, want a fresh 32-hex id", got)
			}
			if seen != got {
				t.Errorf("handler saw id %q, response carries %q; they must match for logs", seen, got)
			}
		})
	}
}

func TestNewCorrelationIDUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewCorrelationID()
		if !hex32.MatchString(id) {
			t.Fatalf("NewCorrelationID() = %q, want 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewCorrelationID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestRequireToken(t *testing.T) {
	const token = "s3cret-token"
	open := []string{"/health", "/metrics"}
	cases := []struct {
		name       string
		token      string // server token
		path       string
		auth       string // Authorization header; "" sends none
		wantStatus int
	}{
		{"health open", token, "/health", "", http.StatusOK},
		{"metrics open", token, "/metrics", "", http.StatusOK},
		{"metrics open with wrong token", token, "/metrics", "Bearer nope", http.StatusOK},
		{"missing token", token, "/v2/nodes", "", http.StatusUnauthorized},
		{"wrong token", token, "/v2/nodes", "Bearer nope", http.StatusUnauthorized},
		{"token prefix", token, "/v2/nodes", "Bearer s3cret", http.StatusUnauthorized},
		{"token with suffix", token, "/v2/nodes", "Bearer " + token + "x", http.StatusUnauthorized},
		{"no scheme", token, "/v2/nodes", token, http.StatusUnauthorized},
		{"basic scheme", token, "/v2/nodes", "Basic " + token, http.StatusUnauthorized},
		{"scheme is case-insensitive", token, "/v2/nodes", "bearer " + token, http.StatusOK},
		{"empty bearer", token, "/v2/nodes", "Bearer ", http.StatusUnauthorized},
		{"right token", token, "/v2/nodes", "Bearer " + token, http.StatusOK},
		{"right token on register", token, "/v2/nodes/register", "Bearer " + token, http.StatusOK},
		{"health subpath is not open", token, "/health/x", "", http.StatusUnauthorized},
		{"metrics prefix is not open", token, "/metricsx", "", http.StatusUnauthorized},
		{"empty token disables auth", "", "/v2/nodes", "", http.StatusOK},
		{"empty token ignores a sent token", "", "/v2/nodes", "Bearer anything", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			h := RequireToken(tc.token, open, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				w.WriteHeader(http.StatusOK)
			}))
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d", w.Code, tc.wantStatus)
			}
			if called != (tc.wantStatus == http.StatusOK) {
				t.Errorf("next called = %v with status %d", called, w.Code)
			}
			if tc.wantStatus != http.StatusUnauthorized {
				return
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var e Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("401 body %q is not the JSON envelope: %v", w.Body, err)
			}
			if e.Code != CodeUnauthorized || e.Message == "" {
				t.Errorf("envelope = %+v, want code %s and a message", e, CodeUnauthorized)
			}
			if strings.Contains(w.Body.String(), token) {
				t.Errorf("401 body reveals the token: %s", w.Body)
			}
		})
	}
}

func TestTokenFingerprint(t *testing.T) {
	hex6 := regexp.MustCompile(`^[0-9a-f]{6}$`)
	tokens := []string{"", "a", "b", "s3cret-token", "s3cret-tokem", strings.Repeat("x", 4096)}
	seen := make(map[string]string)
	for _, tok := range tokens {
		fp := TokenFingerprint(tok)
		if !hex6.MatchString(fp) {
			t.Errorf("TokenFingerprint(%q) = %q, want 6 hex digits", tok, fp)
		}
		if again := TokenFingerprint(tok); again != fp {
			t.Errorf("TokenFingerprint(%q) not stable: %q then %q", tok, fp, again)
		}
		if tok != "" && strings.Contains(tok, fp) {
			t.Errorf("TokenFingerprint(%q) = %q is part of the token", tok, fp)
		}
		if other, dup := seen[fp]; dup {
			t.Errorf("TokenFingerprint(%q) = TokenFingerprint(%q) = %q", tok, other, fp)
		}
		seen[fp] = tok
	}
	// SHA-256("abc") is ba7816bf...; pinning one value keeps fingerprints
	// stable across releases, so old and new logs stay comparable.
	if got := TokenFingerprint("abc"); got != "ba7816" {
		t.Errorf(`TokenFingerprint("abc") = %q, want "ba7816" (SHA-256 prefix)`, got)
	}
}

func TestCheckExposure(t *testing.T) {
	cases := []struct {
		addr, token string
		wantErr     string // "" means allowed
	}{
		{"127.0.0.1:8080", "", ""},
		{"127.0.0.1:0", "", ""},
		{"127.1.2.3:8080", "", ""},
		{"[::1]:9200", "", ""},
		{"localhost:9200", "", ""},
		{"0.0.0.0:8080", "", "not loopback"},
		{":8080", "", "not loopback"},
		{"10.1.2.3:8080", "", "not loopback"},
		{"[::]:8080", "", "not loopback"},
		{"[2001:db8::1]:8080", "", "not loopback"},
		{"example.com:8080", "", "not loopback"},
		{"0.0.0.0:8080", "tok", ""},
		{":8080", "tok", ""},
		{"10.1.2.3:8080", "tok", ""},
		{"127.0.0.1:8080", "tok", ""},
		{"127.0.0.1", "", "listen address"},
		{"::1", "", "listen address"},
		{"", "", "listen address"},
		{"[::1:8080", "", "listen address"},
	}
	for _, tc := range cases {
		t.Run(tc.addr+"/token="+tc.token, func(t *testing.T) {
			err := CheckExposure(tc.addr, tc.token)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckExposure(%q, %q): %v", tc.addr, tc.token, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckExposure(%q, %q): err = %v, want one containing %q", tc.addr, tc.token, err, tc.wantErr)
			}
			if tc.wantErr == "not loopback" && !strings.Contains(err.Error(), "LLORCH_API_TOKEN") {
				t.Errorf("refusal %q does not name LLORCH_API_TOKEN", err)
			}
		})
	}
}

// The OpenAI routes answer a missing token in OpenAI's shape; the others in
// llorch's envelope.
func TestUnauthorizedShapeFollowsTheRoute(t *testing.T) {
	h := RequireToken("s3cret", nil, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, tc := range []struct {
		path   string
		openAI bool
	}{
		{"/v1/chat/completions", true},
		{"/v1/models", true},
		{"/v2/tasks", false},
		{"/v1x", false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tc.path, nil))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("%s: status %d", tc.path, rec.Code)
		}
		var openAI OpenAIError
		var envelope Error
		_ = json.Unmarshal(rec.Body.Bytes(), &openAI)
		_ = json.Unmarshal(rec.Body.Bytes(), &envelope)
		switch {
		case tc.openAI && (openAI.Error.Code != CodeUnauthorized || openAI.Error.Type != "authentication_error" || openAI.Error.Message == ""):
			t.Errorf("%s: %s, want OpenAI's error shape", tc.path, rec.Body)
		case !tc.openAI && envelope.Code != CodeUnauthorized:
			t.Errorf("%s: %s, want llorch's envelope", tc.path, rec.Body)
		}
	}
}
