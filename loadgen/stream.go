package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLine bounds one line of a stream (llama-server's last chunk, with its
// timings, is a few KiB).
const maxLine = 1 << 20

var errLineTooLong = errors.New("line longer than 1 MiB")

// lineReader returns the lines of a stream without allocating per line:
// a line is a slice of the bufio buffer, or, for a line longer than the
// buffer, of one reused slice.
type lineReader struct {
	br   *bufio.Reader
	long []byte
}

func newLineReader(r io.Reader, size int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, size)}
}

// next returns the next line without its terminator (\n or \r\n), valid
// until the next call. A last line with no terminator is returned too;
// after it, io.EOF. Another read error drops the partial line it cut.
func (l *lineReader) next() ([]byte, error) {
	line, err := l.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		l.long = append(l.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(l.long) > maxLine {
				return nil, errLineTooLong
			}
			line, err = l.br.ReadSlice('\n')
			l.long = append(l.long, line...)
		}
		line = l.long
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && len(line) > 0:
		// The last line, unterminated; io.EOF comes on the next call.
	default:
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return line, nil
}

// streamResult is how a stream ended.
type streamResult struct {
	done     bool   // "data: [DONE]" seen
	errEvent bool   // an "event: error", or a chunk with "error"
	errMsg   string // its data
	err      error  // a read error, or a chunk that is not JSON
}

// scanStream reads an OpenAI-style SSE stream up to "data: [DONE]", an
// error, or its end, calling onToken for every chunk with content. Each
// "data:" line is one payload (OpenAI streams never split one over lines).
func scanStream(r io.Reader, onToken func()) streamResult {
	return scanStreamSize(r, 16<<10, onToken)
}

func scanStreamSize(r io.Reader, size int, onToken func()) (res streamResult) {
	lr := newLineReader(r, size)
	errorEvent := false // the current event is "event: error"
	for {
		line, err := lr.next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.err = fmt.Errorf("stream cut before [DONE]: %w", err)
			}
			return res
		}
		if len(line) == 0 {
			errorEvent = false // a blank line ends the event
			continue
		}
		if line[0] == ':' {
			continue // comment (keep-alive ping)
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte{' '})
		}
		switch string(field) { // no allocation: compared in place
		case "event":
			errorEvent = string(value) == "error"
		case "data":
			if errorEvent {
				res.errEvent, res.errMsg = true, clip(value)
				return res
			}
			if string(value) == "[DONE]" {
				res.done = true
				return res
			}
			c, err := ParseChunk(value)
			if err != nil {
				res.err = fmt.Errorf("chunk %q: %w", clip(value), err)
				return res
			}
			if c.Error != "" {
				res.errEvent, res.errMsg = true, c.Error
				return res
			}
			if c.Content {
				onToken()
			}
		}
	}
}

func clip(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// Chunk is what the generator reads from one streamed "data:" payload.
type Chunk struct {
	// Content: choices[0].delta.content (chat) or choices[0].text
	// (completions) is not empty.
	Content bool
	// Error is the payload's "error" member (as JSON, clipped) when it has
	// one that is not null: llama-server reports a failure mid-stream so.
	Error string
}

type wireChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		Text string `json:"text"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

// ParseChunk reads one "data:" payload of an OpenAI stream. It fails only
// on a payload that is not a JSON object of the expected shape.
func ParseChunk(data []byte) (Chunk, error) {
	var w wireChunk
	if err := json.Unmarshal(data, &w); err != nil {
		return Chunk{}, err
	}
	var c Chunk
	if len(w.Error) > 0 && string(w.Error) != "null" {
		c.Error = clip(w.Error)
	}
	if len(w.Choices) > 0 {
		c.Content = w.Choices[0].Delta.Content != "" || w.Choices[0].Text != ""
	}
	return c, nil
}
