package simengine_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/llorch/llorch/engine/enginetest"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/llorch/llorch/sse"
)

// recording is one recorded llama-server response.
type recording struct {
	status int
	header http.Header
	body   []byte
}

func loadRecording(t testing.TB, name string) recording {
	t.Helper()
	r := enginetest.Load(t, name)
	return recording{status: r.Status, header: r.Header, body: r.Body}
}

// shapeOf describes a JSON document as lines "path kind", keys in document
// order: the sequence of keys and value kinds, not the values. An array
// contributes each distinct element shape once, sorted, so arrays of
// different lengths with alike elements have the same shape.
func shapeOf(data []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	lines, err := shapeValue(dec, "$")
	if err != nil {
		return nil, err
	}
	switch _, err := dec.Token(); {
	case err == nil:
		return nil, errors.New("data after the JSON value")
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("after the JSON value: %w", err)
	}
	return lines, nil
}

func shapeValue(dec *json.Decoder, path string) ([]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			lines := []string{path + " object"}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				sub, err := shapeValue(dec, path+"."+kt.(string))
				if err != nil {
					return nil, err
				}
				lines = append(lines, sub...)
			}
			_, err := dec.Token() // '}'
			return lines, err
		case '[':
			var blocks []string
			for dec.More() {
				sub, err := shapeValue(dec, path+"[]")
				if err != nil {
					return nil, err
				}
				if b := strings.Join(sub, "\n"); !slices.Contains(blocks, b) {
					blocks = append(blocks, b)
				}
			}
			slices.Sort(blocks)
			lines := []string{path + " array"}
			for _, b := range blocks {
				lines = append(lines, strings.Split(b, "\n")...)
			}
			_, err := dec.Token() // ']'
			return lines, err
		}
		return nil, fmt.Errorf("unexpected %v", v)
	case string:
		return []string{path + " string"}, nil
	case json.Number:
		return []string{path + " number"}, nil
	case bool:
		return []string{path + " bool"}, nil
	case nil:
		return []string{path + " null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// sameShape fails t unless got has the shape of want, key order included.
func sameShape(t *testing.T, what string, got, want []byte) {
	t.Helper()
	g, err := shapeOf(got)
	if err != nil {
		t.Fatalf("%s: simulator body %.200q: %v", what, got, err)
	}
	w, err := shapeOf(want)
	if err != nil {
		t.Fatalf("%s: fixture body: %v", what, err)
	}
	if slices.Equal(g, w) {
		return
	}
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	at := func(l []string) string {
		if i < len(l) {
			return l[i]
		}
		return "(end)"
	}
	t.Errorf("%s: shape differs from the recording at line %d: simulator %q, llama-server %q\nsimulator:\n  %s\nllama-server:\n  %s",
		what, i, at(g), at(w), strings.Join(g, "\n  "), strings.Join(w, "\n  "))
}

// events splits an event-stream body into its events' data.
func events(t *testing.T, body []byte) []string {
	t.Helper()
	r := sse.NewReader(bytes.NewReader(body))
	var out []string
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.IsComment {
			t.Errorf("comment %q in the stream", ev.Comment)
			continue
		}
		out = append(out, ev.Data)
	}
}

// jsonField returns the raw value of key in a JSON object.
func jsonField(t *testing.T, obj []byte, path ...string) []byte {
	t.Helper()
	for _, key := range path {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(obj, &m); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		v, ok := m[key]
		if !ok {
			t.Fatalf("no %q in %.100s", key, obj)
		}
		obj = v
	}
	return obj
}

// jsonArray returns the elements of a JSON array.
func jsonArray(t *testing.T, data []byte) []json.RawMessage {
	t.Helper()
	var a []json.RawMessage
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestShapeOf checks the shape walker itself: key order and kinds count,
// values do not.
func TestShapeOf(t *testing.T) {
	same := [][2]string{
		{`{"a":1,"b":"x"}`, `{"a":2.5,"b":""}`},
		{`[1,2,3]`, `[4]`},
		{`[{"a":1},{"a":2,"b":true},{"a":3}]`, `[{"a":1,"b":false},{"a":9}]`},
	}
	for _, p := range same {
		g, err1 := shapeOf([]byte(p[0]))
		w, err2 := shapeOf([]byte(p[1]))
		if err1 != nil || err2 != nil || !slices.Equal(g, w) {
			t.Errorf("%s and %s: %v vs %v (%v %v)", p[0], p[1], g, w, err1, err2)
		}
	}
	differ := [][2]string{
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`},
		{`{"a":1}`, `{"a":"1"}`},
		{`{"a":null}`, `{"a":{}}`},
		{`{"a":[]}`, `{"a":[1]}`},
		{`{"a":{"b":1}}`, `{"a":{"c":1}}`},
		{`{"a":1}`, `{"a":1,"b":1}`},
	}
	for _, p := range differ {
		g, _ := shapeOf([]byte(p[0]))
		w, _ := shapeOf([]byte(p[1]))
		if slices.Equal(g, w) {
			t.Errorf("%s and %s have the same shape %v", p[0], p[1], g)
		}
	}
	if _, err := shapeOf([]byte(`{"a":1} {}`)); err == nil {
		t.Error("trailing value accepted")
	}
}
