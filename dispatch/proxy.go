package dispatch

import (
	"bytes"
	"context"
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
	"github.com/llorch/llorch/engine"
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
	case api.CodePoolUnavailable, api.CodeNodeUnavailable, api.CodeModelNotAvailable, api.CodeWorkerReset, api.CodeShuttingDown:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Forward serves one OpenAI request whose job was submitted: it waits for
// placement, sends body to the engine's path, and streams the answer. When
// nothing could be written (no pool, the engines failed before answering)
// it returns the error for the caller to write in its API's shape; nil
// means the response was written, or the client left.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, path string, body []byte, j *Job, session string) *api.Error {
	admitted := time.Now()
	_, res, apiErr := p.d.Execute(r.Context(), j, session, func(ctx context.Context, pl Placement) Result {
		sent := time.Now()
		ctx, dog, release := watch(ctx, p.d.firstByteLimit(pl), p.d.opts.StallTimeout)
		defer release()
		resp, err := p.send(ctx, pl, path, body)
		if err == nil && resp.StatusCode >= 500 {
			resp.Body.Close()
			err = fmt.Errorf("engine answered %s", resp.Status)
		}
		if err != nil {
			if cause := stalled(ctx); cause != nil {
				err = cause
			}
			return Result{Outcome: EngineFailed, Err: err}
		}
		defer resp.Body.Close()
		res := p.relay(w, resp, pl, admitted, j, dog)
		res.Obs.Sent = sent
		return res
	})
	switch {
	case apiErr != nil && apiErr.Code == CodeCancelled:
		p.metrics.TaskEnded("cancelled")
		return nil
	case apiErr != nil && res.Delivered:
		// Stopped mid-answer (Abort): relay ended the stream with an
		// error event; the status line is gone.
		p.metrics.TaskEnded(outcomeOf(apiErr.Code))
		return nil
	case apiErr != nil:
		p.metrics.TaskEnded(outcomeOf(apiErr.Code))
		return apiErr
	case !res.Delivered:
		if r.Context().Err() != nil {
			p.metrics.TaskEnded("cancelled")
			return nil
		}
		p.metrics.TaskEnded("engine_error")
		return &api.Error{Code: api.CodePoolUnavailable, Message: res.Err.Error(), Retriable: true, RetryAfterMS: 1000}
	}
	return nil
}

func (p *Proxy) send(ctx context.Context, pl Placement, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(pl.Candidate.Pool.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", engine.NewIdempotencyKey())
	return p.engines.Do(req)
}

// doneMarker ends an OpenAI stream; a stream that stops without it was cut.
const doneText = "data: [DONE]"

var doneMarker = []byte(doneText)

// tailSize is how much of an answer's end the relay keeps: enough for
// llama-server's last chunk (usage and timings) and the [DONE] marker.
const tailSize = 1536

// relayBuffer is a relay's memory: the read buffer and the answer's tail.
type relayBuffer struct {
	read [32 << 10]byte
	end  tail
}

// relayBuffers recycles relay buffers: a buffer per request was most of
// the proxy's garbage, and GC pauses its tail latency.
var relayBuffers = sync.Pool{New: func() any { return new(relayBuffer) }}

// tail keeps the last tailSize bytes passed through, in a fixed array.
type tail struct {
	buf [2 * tailSize]byte
	n   int
}

// add appends p, keeping only the last tailSize bytes; it copies at most
// tailSize bytes however long p is.
func (t *tail) add(p []byte) {
	if len(p) >= tailSize {
		t.n = copy(t.buf[:], p[len(p)-tailSize:])
		return
	}
	if t.n+len(p) > len(t.buf) {
		t.n = copy(t.buf[:], t.buf[t.n-tailSize:t.n])
	}
	t.n += copy(t.buf[t.n:], p)
}

// bytes returns the kept end of the answer (up to 2×tailSize bytes).
func (t *tail) bytes() []byte { return t.buf[:t.n] }

// relay copies the engine's answer to the client, flushing every read.
// A write the client does not take within ClientWriteTimeout ends the
// request: a client that stops reading must not hold an engine slot, nor
// the control plane's memory, for good.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, pl Placement, admitted time.Time, j *Job, dog *watchdog) Result {
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if stream {
		w.Header().Set("X-Accel-Buffering", "no")
	}
	w.Header().Set("X-Llorch-Pool", pl.Candidate.PoolKey())
	if pl.Candidate.ReplicaID != "" {
		w.Header().Set("X-Llorch-Replica", pl.Candidate.ReplicaID)
	}
	w.WriteHeader(resp.StatusCode)
	res := Result{Delivered: true}
	flusher, _ := w.(http.Flusher)
	rc := http.NewResponseController(w)
	rb := relayBuffers.Get().(*relayBuffer)
	defer relayBuffers.Put(rb)
	buf, end := rb.read[:], &rb.end
	end.n = 0
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			dog.alive()
			read := time.Now()
			if res.Obs.FirstByte.IsZero() {
				res.Obs.FirstByte = read
				if resp.StatusCode == http.StatusOK {
					p.metrics.FirstToken(pl.Candidate.NodeID, pl.Candidate.Pool.PoolID, read.Sub(admitted), j.Predicted.TTFT, j.Trace)
				}
			}
			if p.d.opts.ClientWriteTimeout > 0 {
				_ = rc.SetWriteDeadline(read.Add(p.d.opts.ClientWriteTimeout)) // not supported by recorders: no limit then
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				// The client is gone; its context cancels the engine request.
				res.Outcome, res.Err = Abandoned, werr
				return res
			}
			if flusher != nil {
				flusher.Flush()
			}
			p.metrics.ProxyOverhead(time.Since(read), j.Trace)
			end.add(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			res.Obs.End = time.Now()
			switch {
			case resp.StatusCode != http.StatusOK:
				// The engine refused the request itself; the pool is fine.
				p.metrics.TaskEnded("engine_error")
				res.Outcome, res.Err = Abandoned, fmt.Errorf("engine answered %s", resp.Status)
			case stream && !bytes.Contains(end.bytes(), doneMarker):
				p.workerReset(w, flusher, errors.New("stream ended without [DONE]"))
				res.Outcome, res.Err = EngineFailed, errors.New("stream ended without [DONE]")
			default:
				p.metrics.TaskEnded("completed")
				res.Outcome = Succeeded
				if t, ok := engine.LastTimings(end.bytes()); ok {
					timingsObservation(&res.Obs, t)
				}
			}
			return res
		}
		if err != nil {
			res.Err = err
			if cause := stalled(resp.Request.Context()); cause != nil {
				// The engine went silent mid-answer: lost, like a dead one.
				res.Err = cause
				if stream {
					p.workerReset(w, flusher, cause)
				}
				res.Outcome = EngineFailed
				return res
			}
			if resp.Request != nil && resp.Request.Context().Err() != nil {
				res.Outcome = Abandoned
				if stop := aborted(resp.Request.Context()); stop != nil {
					// Stopped by Abort (shutdown): the client is still
					// there and hears why. Forward counts the outcome.
					if stream {
						p.streamError(w, flusher, http.StatusServiceUnavailable, *stop)
					}
					return res
				}
				p.metrics.TaskEnded("cancelled")
				return res
			}
			if stream {
				p.workerReset(w, flusher, err)
			}
			res.Outcome = EngineFailed
			return res
		}
	}
}

// workerReset ends a started stream with an error event: the status line
// is gone, so the error travels in the stream (SPEC §5).
func (p *Proxy) workerReset(w io.Writer, f http.Flusher, cause error) {
	p.metrics.TaskEnded("worker_reset")
	p.streamError(w, f, http.StatusServiceUnavailable, api.Error{Code: api.CodeWorkerReset,
		Message: "the engine serving the request was lost: " + cause.Error(), Retriable: true, RetryAfterMS: 1000})
}

// streamError writes e as an OpenAI-shaped error event into a started
// stream.
func (p *Proxy) streamError(w io.Writer, f http.Flusher, status int, e api.Error) {
	body, _ := json.Marshal(api.OpenAIErrorOf(status, e))
	_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", body)
	if f != nil {
		f.Flush()
	}
}
