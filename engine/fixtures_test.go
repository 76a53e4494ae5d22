package engine_test

import (
	"bytes"
	"github.com/llorch/llorch/engine/enginetest"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// recording is one recorded llama-server response.
type recording struct {
	name   string
	status int
	header http.Header
	body   []byte
}

func loadRecording(t testing.TB, name string) recording {
	t.Helper()
	r := enginetest.Load(t, name)
	return recording{name: r.Name, status: r.Status, header: r.Header, body: r.Body}
}

// httpRecordings lists the fixtures that are HTTP responses (the others
// are poll logs and JSON).
func httpRecordings(t testing.TB) []string {
	t.Helper()
	dir := enginetest.Dir(t)
	names, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no recordings in %s: %v", dir, err)
	}
	var out []string
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(raw, []byte("HTTP ")) {
			out = append(out, filepath.Base(n))
		}
	}
	return out
}
