package loadgen

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const fixtureDir = "../../shared/fixtures/llama-server"

// fixtureBody is a recorded response's body (after the header block).
func fixtureBody(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtureDir + "/" + name)
	if err != nil {
		t.Skipf("fixture: %v", err)
	}
	_, body, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		t.Fatalf("%s: no header block", name)
	}
	return body
}

func scan(data []byte, size int) (streamResult, int) {
	n := 0
	res := scanStreamSize(bytes.NewReader(data), size, func() { n++ })
	return res, n
}

// TestScanStreamRecorded reads llama-server's own streamed chat completion.
func TestScanStreamRecorded(t *testing.T) {
	body := fixtureBody(t, "chat_stream.txt")
	want := strings.Count(string(body), `"delta":{"content":"`) // every content chunk is non-empty here
	res, n := scan(body, 16<<10)
	if !res.done || res.errEvent || res.err != nil || n != want || want == 0 {
		t.Fatalf("got %+v with %d tokens, want done with %d", res, n, want)
	}
}

func TestScanStream(t *testing.T) {
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name     string
		in       string
		done     bool
		errEvent bool
		err      bool
		tokens   int
	}{
		{"plain", chunk("a") + chunk("b") + "data: [DONE]\n\n", true, false, false, 2},
		{"CRLF and comments", ": ping\r\n\r\n" + strings.ReplaceAll(chunk("a"), "\n", "\r\n") + "data: [DONE]\r\n\r\n", true, false, false, 1},
		{"no space after colon", "data:" + strings.TrimPrefix(chunk("a"), "data: ") + "data:[DONE]", true, false, false, 1},
		{"empty and null content are no token", `data: {"choices":[{"delta":{"content":""}}]}` + "\n\n" +
			`data: {"choices":[{"delta":{"role":"assistant","content":null}}]}` + "\n\ndata: [DONE]\n\n", true, false, false, 0},
		{"completions text", `data: {"choices":[{"text":"hi","index":0}]}` + "\n\ndata: [DONE]\n\n", true, false, false, 1},
		{"only the first choice counts", `data: {"choices":[{"delta":{}},{"delta":{"content":"x"}}]}` + "\n\ndata: [DONE]\n\n", true, false, false, 0},
		{"line longer than the buffer", chunk(long) + "data: [DONE]\n\n", true, false, false, 1},
		{"unterminated [DONE] at the end", chunk("a") + "data: [DONE]", true, false, false, 1},
		{"cut", chunk("a") + chunk("b"), false, false, false, 2},
		{"cut mid-line", chunk("a") + `data: {"choi`, false, false, true, 1},
		{"error event", chunk("a") + "event: error\ndata: {\"code\":\"WORKER_RESET\"}\n\n", false, true, false, 1},
		{"other event names are chunks", "event: message\n" + chunk("a") + "data: [DONE]\n\n", true, false, false, 1},
		{"a blank line ends an error event", "event: error\n\n" + chunk("a") + "data: [DONE]\n\n", true, false, false, 1},
		{"error member", `data: {"error":{"message":"boom"}}` + "\n\n", false, true, false, 0},
		{"null error member is none", `data: {"error":null,"choices":[{"delta":{"content":"a"}}]}` + "\n\ndata: [DONE]\n\n", true, false, false, 1},
		{"not JSON", "data: hello\n\n", false, false, true, 0},
		{"other fields ignored", "id: 1\nretry: 10\n" + chunk("a") + "data: [DONE]\n\n", true, false, false, 1},
		{"nothing after [DONE] is read", "data: [DONE]\n\n" + chunk("a"), true, false, false, 0},
	}
	for _, c := range cases {
		for _, size := range []int{16, 16 << 10} {
			res, n := scan([]byte(c.in), size)
			if res.done != c.done || res.errEvent != c.errEvent || (res.err != nil) != c.err || n != c.tokens {
				t.Errorf("%s (buffer %d): got %+v and %d tokens, want done=%v errEvent=%v err=%v tokens=%d",
					c.name, size, res, n, c.done, c.errEvent, c.err, c.tokens)
			}
		}
	}
}

// TestLineReaderDoesNotAllocatePerLine: lines are slices of the buffer.
func TestLineReaderDoesNotAllocatePerLine(t *testing.T) {
	stream := []byte(strings.Repeat(chunk("token"), 1000))
	r := bytes.NewReader(stream)
	lr := newLineReader(r, 16<<10)
	allocs := testing.AllocsPerRun(5, func() {
		r.Reset(stream)
		lr.br.Reset(r)
		for {
			if _, err := lr.next(); err != nil {
				return
			}
		}
	})
	if allocs > 0 {
		t.Fatalf("%v allocations reading 2000 lines", allocs)
	}
}

// oracle is a plain reading of the same stream semantics: split on \n,
// strip \r, one payload per data line.
func oracle(data string) (res streamResult, tokens int) {
	lines := strings.Split(data, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the text ended with a line terminator
	}
	errorEvent := false
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		switch {
		case l == "":
			errorEvent = false
			continue
		case l[0] == ':':
			continue
		}
		field, value, found := strings.Cut(l, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "event":
			errorEvent = value == "error"
		case "data":
			if errorEvent {
				res.errEvent = true
				return res, tokens
			}
			if value == "[DONE]" {
				res.done = true
				return res, tokens
			}
			c, err := ParseChunk([]byte(value))
			if err != nil {
				res.err = err
				return res, tokens
			}
			if c.Error != "" {
				res.errEvent = true
				return res, tokens
			}
			if c.Content {
				tokens++
			}
		}
	}
	return res, tokens
}

func FuzzScanStream(f *testing.F) {
	f.Add([]byte(chunk("a")+"data: [DONE]\n\n"), uint8(0))
	f.Add([]byte(": ping\r\n\r\nevent: error\r\ndata: {}\r\n\r\n"), uint8(3))
	f.Add([]byte(`data: {"choices":[{"text":"hi"}]}`+"\ndata:[DONE]"), uint8(200))
	f.Add([]byte("event: error\n\n"+chunk(strings.Repeat("y", 100))+`data: {"error":1}`), uint8(7))
	if b, err := os.ReadFile(fixtureDir + "/chat_stream.txt"); err == nil {
		f.Add(b, uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		got, n := scan(data, 16+int(size))
		want, wn := oracle(string(data))
		if got.done != want.done || got.errEvent != want.errEvent || (got.err != nil) != (want.err != nil) || n != wn {
			t.Fatalf("scanStream %+v with %d tokens; the plain reading %+v with %d", got, n, want, wn)
		}
		if got.done && (got.errEvent || got.err != nil) {
			t.Fatalf("done and failed at once: %+v", got)
		}
	})
}

func FuzzParseChunk(f *testing.F) {
	f.Add([]byte(`{"choices":[{"index":0,"delta":{"content":"a"}}]}`))
	f.Add([]byte(`{"choices":[{"text":"a"}],"error":null}`))
	f.Add([]byte(`{"error":{"code":500,"message":"x"}}`))
	f.Add([]byte(`{"choices":[]}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseChunk(data)
		if err != nil {
			if c != (Chunk{}) {
				t.Fatalf("error %v with chunk %+v", err, c)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if len(c.Error) > 210 {
			t.Fatalf("error not clipped: %d bytes", len(c.Error))
		}
	})
}
