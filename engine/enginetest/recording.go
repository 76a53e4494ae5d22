// Package enginetest loads the llama-server recordings of
// ../shared/fixtures/llama-server for tests of the engine client and the
// simulator.
package enginetest

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/llorch/llorch/fixtures"
)

// Dir is the llama-server recordings' folder (fixtures.Dir: skips the
// test when they are missing, outside CI).
func Dir(tb testing.TB) string { return fixtures.Dir(tb, fixtures.LlamaServer) }

// Recording is one recorded llama-server response.
type Recording struct {
	Name   string
	Status int
	Header http.Header
	Body   []byte
}

// Load parses a recording: "HTTP <status>", header lines, a blank line,
// the body exactly as received. A missing or malformed file fails t.
func Load(t testing.TB, name string) Recording {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(Dir(t), name))
	if err != nil {
		t.Fatalf("recording %s: %v", name, err)
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
	return Recording{Name: name, Status: status, Header: h, Body: body}
}
