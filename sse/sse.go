// Package sse reads and writes Server-Sent Events (the WHATWG event-stream
// format): llama-server streams completions with it, and the control plane
// streams task events with it.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxLineBytes bounds one line of a stream; llama-server's final chunk with
// its generation settings is a few KiB.
const MaxLineBytes = 1 << 20

// ErrLineTooLong is returned for a line over MaxLineBytes.
var ErrLineTooLong = errors.New("sse: line too long")

// Event is one dispatched event, or a comment line (Comment non-empty or
// IsComment set) which a proxy may pass through as a keep-alive.
type Event struct {
	Type      string // "event:" field; empty means "message"
	Data      string // "data:" lines joined by "\n"
	ID        string
	IsComment bool
	Comment   string
}

// Reader parses an event stream.
type Reader struct {
	r *bufio.Reader
	// skipLF is set after a line ended in \r: a \n that follows belongs
	// to that line ending. Remembering it, rather than peeking, returns a
	// \r-terminated line without waiting for the next byte.
	skipLF bool
	// The event being assembled; it survives a comment line returned
	// between two of its fields.
	typ     string
	data    strings.Builder
	hasData bool
	// lastID is the last event ID buffer: it persists across events.
	lastID string
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 32<<10)}
}

// Next returns the next event or comment. At the end of the stream it
// returns io.EOF; an event not terminated by a blank line is discarded, as
// the format requires (the writer died mid-event). An event's ID is the last
// "id:" field seen so far in the stream, as the format requires.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if line == "" {
			if !r.hasData {
				// Fields without data dispatch nothing; start over.
				r.typ = ""
				continue
			}
			ev := Event{Type: r.typ, Data: r.data.String(), ID: r.lastID}
			r.typ, r.hasData = "", false
			r.data.Reset()
			return ev, nil
		}
		if line[0] == ':' {
			return Event{IsComment: true, Comment: strings.TrimPrefix(line[1:], " ")}, nil
		}
		field, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "data":
			if r.hasData {
				r.data.WriteByte('\n')
			}
			r.data.WriteString(value)
			r.hasData = true
		case "event":
			r.typ = value
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID = value
			}
		}
		// "retry" and unknown fields are ignored.
	}
}

// readLine reads one line ending in \n, \r\n or \r, without its ending.
func (r *Reader) readLine() (string, error) {
	var buf []byte
	for {
		b, err := r.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				return "", io.EOF // an unterminated last line is incomplete
			}
			return "", err
		}
		if r.skipLF {
			r.skipLF = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return string(buf), nil
		case '\r':
			r.skipLF = true
			return string(buf), nil
		}
		if len(buf) >= MaxLineBytes {
			return "", ErrLineTooLong
		}
		buf = append(buf, b)
	}
}

// Writer writes events to an HTTP response, flushing each one so it leaves
// at once.
type Writer struct {
	w io.Writer
	f http.Flusher
}

// NewWriter sets the event-stream headers on w and returns a Writer.
func NewWriter(w http.ResponseWriter) *Writer {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	f, _ := w.(http.Flusher)
	return &Writer{w: w, f: f}
}

// Event writes one event; typ may be empty. Data with line breaks (\n,
// \r\n or \r) becomes several data lines, which a Reader joins with \n; a
// bare \r is never written inside a line, where a reader would take it for
// a line break and the rest of the line for a field.
func (w *Writer) Event(typ string, data []byte) error {
	var b bytes.Buffer
	if typ != "" {
		if strings.ContainsAny(typ, "\r\n") {
			return fmt.Errorf("sse: event type %q contains a line break", typ)
		}
		b.WriteString("event: ")
		b.WriteString(typ)
		b.WriteByte('\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		line := data
		if i >= 0 {
			line = data[:i]
		}
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
		if i < 0 {
			break
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	b.WriteByte('\n')
	return w.write(b.Bytes())
}

// Comment writes a comment line (a keep-alive ping).
func (w *Writer) Comment(text string) error {
	return w.write([]byte(": " + strings.NewReplacer("\r", " ", "\n", " ").Replace(text) + "\n\n"))
}

func (w *Writer) write(p []byte) error {
	if _, err := w.w.Write(p); err != nil {
		return fmt.Errorf("sse: write: %w", err)
	}
	if w.f != nil {
		w.f.Flush()
	}
	return nil
}
