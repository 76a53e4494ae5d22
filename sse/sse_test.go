package sse

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/fixtures"
)

// readAll reads events until an error and returns both.
func readAll(t *testing.T, src io.Reader) ([]Event, error) {
	t.Helper()
	r := NewReader(src)
	var out []Event
	for {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, ev)
		if len(out) > 10000 {
			t.Fatal("reader does not stop")
		}
	}
}

func TestReaderNext(t *testing.T) {
	msg := func(data string) Event { return Event{Data: data} }
	tests := []struct {
		name string
		in   string
		want []Event
		err  error // returned after the events
	}{
		{"empty stream", "", nil, io.EOF},
		{"one event", "data: hello\n\n", []Event{msg("hello")}, io.EOF},
		{"no space after colon", "data:hello\n\n", []Event{msg("hello")}, io.EOF},
		{"only one space is removed", "data:  two spaces\n\n", []Event{msg(" two spaces")}, io.EOF},
		{"tab is kept", "data:\tx\n\n", []Event{msg("\tx")}, io.EOF},
		{"data lines joined with LF", "data: a\ndata: b\ndata:\ndata: c\n\n", []Event{msg("a\nb\n\nc")}, io.EOF},
		{"empty data dispatches an empty event", "data:\n\n", []Event{msg("")}, io.EOF},
		{"field name without colon is an empty value", "data\n\n", []Event{msg("")}, io.EOF},
		{"colon in value kept", "data: a: b:c\n\n", []Event{msg("a: b:c")}, io.EOF},
		{"event type", "event: ping\ndata: x\n\n", []Event{{Type: "ping", Data: "x"}}, io.EOF},
		{"event type does not carry over", "event: a\ndata: 1\n\ndata: 2\n\n", []Event{{Type: "a", Data: "1"}, msg("2")}, io.EOF},
		{"last event type wins", "event: a\nevent: b\ndata: x\n\n", []Event{{Type: "b", Data: "x"}}, io.EOF},
		{"id", "id: 7\ndata: x\n\n", []Event{{ID: "7", Data: "x"}}, io.EOF},
		{"id persists across events", "id: 7\ndata: x\n\ndata: y\n\nid:\ndata: z\n\n",
			[]Event{{ID: "7", Data: "x"}, {ID: "7", Data: "y"}, {Data: "z"}}, io.EOF},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			[]Event{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}}, io.EOF},
		{"id set by a field-only block", "id: 9\n\ndata: x\n\n", []Event{{ID: "9", Data: "x"}}, io.EOF},
		{"retry and unknown fields ignored", "retry: 100\nfoo: bar\ndata: x\n\n", []Event{msg("x")}, io.EOF},
		{"field names are case sensitive", "Data: x\nDATA: y\ndata: z\n\n", []Event{msg("z")}, io.EOF},
		{"fields without data dispatch nothing", "event: a\n\ndata: x\n\n", []Event{msg("x")}, io.EOF},
		{"blank lines between events", "\n\n\ndata: x\n\n\n\ndata: y\n\n", []Event{msg("x"), msg("y")}, io.EOF},
		{"comment", ": keep-alive\n\n", []Event{{IsComment: true, Comment: "keep-alive"}}, io.EOF},
		{"comment without space", ":ping\n", []Event{{IsComment: true, Comment: "ping"}}, io.EOF},
		{"empty comment", ":\n", []Event{{IsComment: true}}, io.EOF},
		{"comment inside an event does not break it", "data: a\n: ping\ndata: b\n\n",
			[]Event{{IsComment: true, Comment: "ping"}, msg("a\nb")}, io.EOF},
		{"CRLF endings", "event: e\r\ndata: a\r\ndata: b\r\n\r\n", []Event{{Type: "e", Data: "a\nb"}}, io.EOF},
		{"CR endings", "data: a\rdata: b\r\rdata: c\r\r", []Event{msg("a\nb"), msg("c")}, io.EOF},
		{"mixed endings", "data: a\r\ndata: b\rdata: c\n\r\n", []Event{msg("a\nb\nc")}, io.EOF},
		{"CR CR is two line endings", "data: a\r\r\ndata: b\n\n", []Event{msg("a"), msg("b")}, io.EOF},
		{"unterminated event discarded", "data: a\n\ndata: b\n", []Event{msg("a")}, io.EOF},
		{"unterminated line discarded", "data: a\n\ndata: b", []Event{msg("a")}, io.EOF},
		{"unterminated event after a comment", ": c\ndata: b\n", []Event{{IsComment: true, Comment: "c"}}, io.EOF},
		{"BOM-less UTF-8 kept", "data: héllo ✓\n\n", []Event{msg("héllo ✓")}, io.EOF},
		{"line at the limit", "data:" + strings.Repeat("x", MaxLineBytes-5) + "\n\n",
			[]Event{msg(strings.Repeat("x", MaxLineBytes-5))}, io.EOF},
		{"line over the limit", "data: a\n\ndata:" + strings.Repeat("x", MaxLineBytes-4) + "\n\n",
			[]Event{msg("a")}, ErrLineTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// errReader returns its data, then err.
type errReader struct {
	data []byte
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	got, err := readAll(t, &errReader{data: []byte("data: a\n\ndata: b\n"), err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v, want %v", err, boom)
	}
	if len(got) != 1 || got[0].Data != "a" {
		t.Fatalf("events = %+v", got)
	}
}

// A line ended by a lone \r must be returned at once, not when the next
// byte arrives: a live stream may pause right after it.
func TestReaderCRDoesNotWaitForNextByte(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() { _, _ = pw.Write([]byte("data: x\r\r")) }() // then nothing: the writer stays open
	done := make(chan Event, 1)
	go func() {
		ev, err := NewReader(pr).Next()
		if err == nil {
			done <- ev
		}
		close(done)
	}()
	select {
	case ev := <-done:
		if ev.Data != "x" {
			t.Fatalf("event = %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next blocked after a CR-terminated event")
	}
	_ = pw.Close()
}

func TestWriterRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	w := NewWriter(rec)
	if err := w.Event("", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := w.Event("task", []byte("line 1\nline 2\n\nline 4")); err != nil {
		t.Fatal(err)
	}
	if err := w.Comment("ping\nwith\r\nbreaks"); err != nil {
		t.Fatal(err)
	}
	if err := w.Event("crlf", []byte("a\r\nb\rc")); err != nil {
		t.Fatal(err)
	}
	if err := w.Event("empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Event("bad\ntype", []byte("x")); err == nil {
		t.Error("an event type with a line break was written")
	}
	if got := rec.Header().Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control = %q", got)
	}
	if !rec.Flushed {
		t.Error("events were not flushed")
	}
	wantWire := "data: {\"a\":1}\n\n" +
		"event: task\ndata: line 1\ndata: line 2\ndata: \ndata: line 4\n\n" +
		": ping with  breaks\n\n" +
		"event: crlf\ndata: a\ndata: b\ndata: c\n\n" +
		"event: empty\ndata: \n\n"
	if got := rec.Body.String(); got != wantWire {
		t.Errorf("wire:\n%q\nwant\n%q", got, wantWire)
	}
	got, err := readAll(t, bytes.NewReader(rec.Body.Bytes()))
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	want := []Event{
		{Data: `{"a":1}`},
		{Type: "task", Data: "line 1\nline 2\n\nline 4"},
		{IsComment: true, Comment: "ping with  breaks"},
		{Type: "crlf", Data: "a\nb\nc"},
		{Type: "empty", Data: ""},
	}
	if len(got) != len(want) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// A bare \r in data must not let the rest of the line pass for a field.
func TestWriterCRCannotInjectFields(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := NewWriter(rec).Event("", []byte("x\revent: evil\rid: 1")); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, rec.Body)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != (Event{Data: "x\nevent: evil\nid: 1"}) {
		t.Fatalf("events = %+v", got)
	}
}

// fixtureBody returns the body of a recorded llama-server response: the
// file holds a status line, headers, a blank line and the body.
func fixtureBody(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtures.Dir(t, fixtures.LlamaServer), name))
	if err != nil {
		t.Fatalf("recording %s: %v", name, err)
	}
	_, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		t.Fatalf("%s: no blank line after the headers", name)
	}
	return body
}

func TestReaderFixtures(t *testing.T) {
	t.Run("completion_stream", func(t *testing.T) {
		evs, err := readAll(t, bytes.NewReader(fixtureBody(t, "completion_stream.txt")))
		if !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if len(evs) != 5 {
			t.Fatalf("%d events, want 4 token chunks and the final one", len(evs))
		}
		for i, ev := range evs {
			if ev.IsComment || ev.Type != "" || !strings.HasPrefix(ev.Data, `{"index":0,`) {
				t.Errorf("event %d = %+v", i, ev)
			}
		}
		if !strings.Contains(evs[4].Data, `"stop":true`) || !strings.Contains(evs[4].Data, `"timings":`) {
			t.Errorf("last event is not the final chunk: %.80s", evs[4].Data)
		}
	})
	t.Run("chat_stream", func(t *testing.T) {
		evs, err := readAll(t, bytes.NewReader(fixtureBody(t, "chat_stream.txt")))
		if !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		// role chunk, 8 content chunks, finish chunk, usage chunk, [DONE]
		if len(evs) != 12 {
			t.Fatalf("%d events, want 12", len(evs))
		}
		if last := evs[len(evs)-1]; last.Data != "[DONE]" {
			t.Errorf("last event = %q, want [DONE]", last.Data)
		}
		for i, ev := range evs[:len(evs)-1] {
			if !strings.HasPrefix(ev.Data, `{"choices":[`) {
				t.Errorf("event %d = %.60q", i, ev.Data)
			}
		}
	})
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n", "event: e\r\ndata: x\r\n\r\n", ": c\n", "data: a\rdata: b\r\r",
		"id: 1\nretry: 3\n\n", "data\n\ndata:", "\xef\xbb\xbfdata: bom\n\n",
	} {
		f.Add([]byte(s), "", "text")
	}
	for _, name := range []string{"completion_stream.txt", "chat_stream.txt"} {
		f.Add(fixtureBody(f, name), "t", `{"x":"y"}`)
	}
	f.Fuzz(func(t *testing.T, stream []byte, typ, data string) {
		// Any input: no panic, and the reader stops.
		r := NewReader(bytes.NewReader(stream))
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				break
			}
			if i > len(stream) {
				t.Fatalf("more events (%d) than input bytes", i)
			}
			if ev.IsComment && (ev.Data != "" || ev.Type != "") {
				t.Fatalf("comment with fields: %+v", ev)
			}
		}

		// Round trip: what Writer.Event writes, Reader reads back.
		rec := httptest.NewRecorder()
		w := NewWriter(rec)
		err := w.Event(typ, []byte(data))
		if strings.ContainsAny(typ, "\r\n") {
			if err == nil {
				t.Fatalf("event type %q with a line break was written", typ)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Comment(data); err != nil {
			t.Fatal(err)
		}
		got, err := readAll(t, rec.Body)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("reading back: %v", err)
		}
		if len(got) != 2 {
			t.Fatalf("read back %d events, want 2: %+v", len(got), got)
		}
		// Line breaks come back as \n; without \r the data is identical.
		want := strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		if !strings.Contains(data, "\r") && want != data {
			t.Fatal("normalization changed data without CR")
		}
		if got[0].Data != want || got[0].Type != typ || got[0].IsComment {
			t.Fatalf("round trip of (%q, %q) = %+v", typ, data, got[0])
		}
		if !got[1].IsComment || strings.ContainsAny(got[1].Comment, "\r\n") {
			t.Fatalf("comment read back as %+v", got[1])
		}
	})
}
