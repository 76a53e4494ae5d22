package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestControlPlaneURL(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080", ""},
		{"https://cp.example.com/", "https://cp.example.com", ""},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", ""},
		{" cp:8080 ", "http://cp:8080", ""},
		{"ftp://cp:21", "", "want the control plane's address"},
		{"", "", "want the control plane's address"},
		{"http://", "", "want the control plane's address"},
	} {
		got, err := controlPlaneURL(tc.in)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("controlPlaneURL(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// The errors a newcomer meets first say what to do.
func TestCLIErrorsSayWhatToDo(t *testing.T) {
	refusing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := refusing.Addr().String()
	refusing.Close() // nothing listens there now
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"UNAUTHORIZED","message":"missing or wrong bearer token"}`))
	}))
	defer guarded.Close()
	for _, tc := range []struct {
		name string
		args []string
		hint string
	}{
		{"nothing listening", []string{"llorch", "--url", closed, "nodes"}, "is orchestratord running there?"},
		{"token refused", []string{"llorch", "--url", guarded.URL, "nodes"}, "pass --api-token or set LLORCH_API_TOKEN"},
		{"not an address", []string{"llorch", "--url", "ftp://x", "nodes"}, "--url/LLORCH_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newApp()
			app.Writer, app.ErrWriter = &bytes.Buffer{}, &bytes.Buffer{}
			err := app.Run(tc.args)
			if err == nil {
				t.Fatal("no error")
			}
			if msg := withHint(err).Error(); !strings.Contains(msg, tc.hint) {
				t.Errorf("error %q lacks the hint %q", msg, tc.hint)
			}
		})
	}
}
