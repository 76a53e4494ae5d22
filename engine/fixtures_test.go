package engine_test

import (
	"bytes"
	"github.com/llorch/llorch/engine/enginetest"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// fixturesDir is where the llama-server recordings are.
func fixturesDir() string { return enginetest.Dir() }

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
	names, err := filepath.Glob(filepath.Join(fixturesDir(), "*.txt"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no fixtures in %s (set LLORCH_FIXTURES): %v", fixturesDir(), err)
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
