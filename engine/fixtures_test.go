package engine_test

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fixturesDir is where the llama-server recordings are: SPEC §10 puts them
// in ../shared/fixtures, next to the repository.
func fixturesDir() string {
	if d := os.Getenv("LLORCH_FIXTURES"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "shared", "fixtures", "llama-server")
}

// recording is one recorded llama-server response.
type recording struct {
	name   string
	status int
	header http.Header
	body   []byte
}

// loadRecording parses a recording: "HTTP <status>", header lines, a blank
// line, the body exactly as received.
func loadRecording(t testing.TB, name string) recording {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixturesDir(), name))
	if err != nil {
		t.Fatalf("fixture (set LLORCH_FIXTURES to the llama-server fixtures dir): %v", err)
	}
	head, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		t.Fatalf("%s: no blank line after the headers", name)
	}
	sc := bufio.NewScanner(bytes.NewReader(head))
	sc.Scan()
	proto, code, _ := strings.Cut(sc.Text(), " ")
	status, err := strconv.Atoi(code)
	if proto != "HTTP" || err != nil {
		t.Fatalf("%s: status line %q", name, sc.Text())
	}
	h := http.Header{}
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			t.Fatalf("%s: header line %q", name, sc.Text())
		}
		h.Add(k, v)
	}
	return recording{name: name, status: status, header: h, body: body}
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
