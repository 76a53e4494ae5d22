package dispatch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
)

// Proxy forwards OpenAI-compatible requests to the placed engine and passes
// the response through as it arrives: each read from the engine is written
// and flushed at once, so a token leaves the control plane as soon as it
// arrives.
type Proxy struct {
	d       *Dispatcher
	engines *http.Client
	log     *slog.Logger
	metrics *Metrics
}

// NewProxy returns a proxy whose engine requests go through engines.
func NewProxy(d *Dispatcher, engines *http.Client, log *slog.Logger) *Proxy {
	return &Proxy{d: d, engines: engines, log: log, metrics: d.opts.Metrics}
}

// StatusOf maps an error code to its HTTP status (SPEC §5).
func StatusOf(code string) int {
	switch code {
	case api.CodeInvalidParams, api.CodeDeadlineUnmet:
		return http.StatusBadRequest
	case api.CodeAdmissionReject, api.CodeQueueFullDropLRU:
		return http.StatusTooManyRequests
	case api.CodePoolUnavailable, api.CodeNodeUnavailable, api.CodeModelNotAvailable, api.CodeWorkerReset:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Forward serves one OpenAI request whose job was submitted: it waits for
// placement, sends body to the engine's path, and streams the answer.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, path string, body []byte, j *Job, session string) {
	ctx := r.Context()
	admitted := time.Now()
	retried := false
	for {
		pl, apiErr, err := j.Wait(ctx)
		if err != nil {
			p.d.Abandon(j)
			p.metrics.TaskEnded("cancelled")
			return
		}
		if apiErr != nil {
			api.WriteError(w, StatusOf(apiErr.Code), *apiErr)
			p.metrics.TaskEnded(outcomeOf(apiErr.Code))
			return
		}
		started := time.Now()
		resp, err := p.send(ctx, pl, path, body)
		if err == nil && resp.StatusCode >= 500 {
			resp.Body.Close()
			err = fmt.Errorf("engine answered %s", resp.Status)
		}
		if err != nil {
			if ctx.Err() != nil {
				p.d.Release(pl, session, Abandoned, 0)
				p.metrics.TaskEnded("cancelled")
				return
			}
			p.d.Release(pl, session, EngineFailed, 0)
			if !retried && p.d.Retry(j, pl) {
				p.log.Warn("engine failed before answering: retrying on the next pool", "task_id", j.ID, "pool", pl.Key(), "err", err)
				retried = true
				continue
			}
			api.WriteError(w, http.StatusServiceUnavailable, api.Error{Code: api.CodePoolUnavailable, Message: err.Error(), Retriable: true, RetryAfterMS: 1000})
			p.metrics.TaskEnded("engine_error")
			return
		}
		outcome := p.relay(w, resp, pl, admitted)
		resp.Body.Close()
		p.d.Release(pl, session, outcome, time.Since(started))
		return
	}
}

func (p *Proxy) send(ctx context.Context, pl Placement, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(pl.Candidate.Pool.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	// Lets net/http retry on a fresh connection if a reused one was already
	// closed by the engine (llama-server closes after streams).
	var key [12]byte
	_, _ = rand.Read(key[:])
	req.Header.Set("Idempotency-Key", hex.EncodeToString(key[:]))
	return p.engines.Do(req)
}

// doneMarker ends an OpenAI stream; a stream that stops without it was cut.
const doneText = "data: [DONE]"

var doneMarker = []byte(doneText)

// relayBuffers recycles the 32 KiB read buffers of relays: a buffer per
// request was most of the proxy's garbage, and GC pauses its tail latency.
var relayBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// keepTail appends p to tail, keeping only the last cap(tail) bytes, so a
// [DONE] marker split across reads is still seen.
func keepTail(tail, p []byte) []byte {
	c := cap(tail)
	if len(p) >= c {
		return append(tail[:0], p[len(p)-c:]...)
	}
	if over := len(tail) + len(p) - c; over > 0 {
		tail = append(tail[:0], tail[over:]...)
	}
	return append(tail, p...)
}

// relay copies the engine's answer to the client, flushing every read.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, pl Placement, admitted time.Time) Outcome {
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if stream {
		w.Header().Set("X-Accel-Buffering", "no")
	}
	w.Header().Set("X-Llorch-Pool", pl.Key())
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	bp := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(bp)
	buf := *bp
	var tailBuf [2 * len(doneText)]byte
	tail := tailBuf[:0] // the last bytes, to see the [DONE] marker
	first := true
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			read := time.Now()
			if first && resp.StatusCode == http.StatusOK {
				p.metrics.FirstToken(pl.Candidate.Pool.PoolID, read.Sub(admitted))
				first = false
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				p.metrics.TaskEnded("cancelled")
				return Abandoned // client gone; its context cancels the engine request
			}
			if flusher != nil {
				flusher.Flush()
			}
			p.metrics.ProxyOverhead(time.Since(read))
			tail = keepTail(tail, buf[:n])
		}
		if errors.Is(err, io.EOF) {
			if stream && resp.StatusCode == http.StatusOK && !bytes.Contains(tail, doneMarker) {
				p.workerReset(w, flusher, errors.New("stream ended without [DONE]"))
				return EngineFailed
			}
			p.metrics.TaskEnded(map[bool]string{true: "completed", false: "engine_error"}[resp.StatusCode == http.StatusOK])
			if resp.StatusCode != http.StatusOK {
				return Abandoned // the engine refused the request; the pool is fine
			}
			return Succeeded
		}
		if err != nil {
			if resp.Request != nil && resp.Request.Context().Err() != nil {
				p.metrics.TaskEnded("cancelled")
				return Abandoned
			}
			if stream {
				p.workerReset(w, flusher, err)
			}
			return EngineFailed
		}
	}
}

// workerReset ends a started stream with an error event: the status line
// is gone, so the error travels in the stream (SPEC §5).
func (p *Proxy) workerReset(w io.Writer, f http.Flusher, cause error) {
	p.metrics.TaskEnded("worker_reset")
	body, _ := json.Marshal(map[string]api.Error{"error": {Code: api.CodeWorkerReset,
		Message: "the engine serving the request was lost: " + cause.Error(), Engine: "llamacpp", Retriable: true, RetryAfterMS: 1000}})
	_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", body)
	if f != nil {
		f.Flush()
	}
}
