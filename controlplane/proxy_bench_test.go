package controlplane_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llorch/llorch/simengine"
)

// benchStreams is how many streams the throughput benchmarks keep open.
const benchStreams = 32

// stampMarker in a request body asks the stamping engine to prefix every
// chunk with an SSE comment carrying the time it was written.
const stampMarker = `"llorch_bench_stamp":true`

// benchBase is the monotonic origin of the stamps.
var benchBase = time.Now()

// stamped wraps an engine: for requests whose body has stampMarker, each
// write of the response is preceded, in the same write, by
// ": t=<ns since benchBase>\n\n". SSE comments pass through the proxy.
func stamped(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(stampMarker)) {
			w = &stampWriter{ResponseWriter: w}
		}
		next.ServeHTTP(w, r)
	})
}

type stampWriter struct {
	http.ResponseWriter
	buf []byte
}

func (s *stampWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf[:0], ": t="...)
	s.buf = strconv.AppendInt(s.buf, int64(time.Since(benchBase)), 10)
	s.buf = append(s.buf, "\n\n"...)
	s.buf = append(s.buf, p...)
	if _, err := s.ResponseWriter.Write(s.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *stampWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() } //nolint:errcheck // best effort, as http.Flusher

// streamOnce posts body and reads the stream to its [DONE].
func streamOnce(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var tail []byte
	buf := make([]byte, 8<<10)
	for {
		n, err := resp.Body.Read(buf)
		tail = append(tail, buf[:n]...)
		if len(tail) > 64 {
			tail = tail[len(tail)-64:]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if !bytes.HasSuffix(tail, []byte("data: [DONE]\n\n")) {
		return fmt.Errorf("stream ended without [DONE]: %q", tail)
	}
	return nil
}

// streamStamped reads a stamped stream and returns, for each chunk, the
// time from the engine's write to this read.
func streamStamped(c *http.Client, url string, body []byte) ([]time.Duration, error) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	rd := bufio.NewReader(resp.Body)
	var lat []time.Duration
	done := false
	for {
		line, err := rd.ReadSlice('\n')
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if v, ok := bytes.CutPrefix(line, []byte(": t=")); ok {
			now := time.Since(benchBase)
			ns, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return nil, err
			}
			lat = append(lat, now-time.Duration(ns))
		}
		if bytes.HasPrefix(line, []byte("data: [DONE]")) {
			done = true
		}
	}
	if !done {
		return nil, errors.New("stream ended without [DONE]")
	}
	return lat, nil
}

type latencies struct {
	p50, p99 time.Duration
	rps      float64
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkProxyOverhead compares OpenAI streams read straight from a
// simulated engine with the same streams through the control plane
// (admission, placement, proxy): about 32 concurrent streams of 16 tokens
// from an engine fast enough (1e6 tokens/s) that the HTTP path dominates.
// first-chunk measures, one stream at a time, the time from the engine
// writing a chunk to the client reading it.
func BenchmarkProxyOverhead(b *testing.B) {
	sim := simengine.New(simengine.Config{Model: "/models/tiny", Parallel: 64, TokensPerSecond: 1e6, PromptTokensPerSecond: 1e6})
	eng := startEngine(b, stamped(sim.Handler()))
	in := newInference(b, inferenceOpts{capacity: 4096})
	in.announce("pool-0", eng.URL, 64, 64, "tiny")

	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	body := []byte(`{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}],"stream":true,"max_tokens":16}`)
	stampBody := []byte(`{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}],"stream":true,"max_tokens":16,` + stampMarker + `}`)
	targets := []struct{ name, url string }{
		{"direct", eng.URL + "/v1/chat/completions"},
		{"via-orchestratord", in.URL + "/v1/chat/completions"},
	}

	streams := map[string]latencies{}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			var (
				mu  sync.Mutex
				all = make([]time.Duration, 0, b.N)
			)
			b.SetParallelism(max(1, benchStreams/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			begin := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var local []time.Duration
				for pb.Next() {
					t0 := time.Now()
					if err := streamOnce(client, tg.url, body); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				all = append(all, local...)
				mu.Unlock()
			})
			elapsed := time.Since(begin)
			b.StopTimer()
			slices.Sort(all)
			l := latencies{p50: percentile(all, 0.50), p99: percentile(all, 0.99), rps: float64(len(all)) / elapsed.Seconds()}
			streams[tg.name] = l
			b.ReportMetric(ms(l.p50), "p50-ms")
			b.ReportMetric(ms(l.p99), "p99-ms")
			b.ReportMetric(l.rps, "req/s")
		})
	}

	firstChunk := map[string]latencies{}
	for _, tg := range targets {
		b.Run("first-chunk/"+tg.name, func(b *testing.B) {
			var first, every []time.Duration
			for b.Loop() {
				lat, err := streamStamped(client, tg.url, stampBody)
				if err != nil {
					b.Fatal(err)
				}
				if len(lat) == 0 {
					b.Fatal("no stamped chunk")
				}
				first = append(first, lat[0])
				every = append(every, lat...)
			}
			slices.Sort(first)
			slices.Sort(every)
			l := latencies{p50: percentile(first, 0.50), p99: percentile(first, 0.99)}
			firstChunk[tg.name] = l
			b.ReportMetric(us(l.p50), "first-p50-µs")
			b.ReportMetric(us(l.p99), "first-p99-µs")
			b.ReportMetric(us(percentile(every, 0.50)), "chunk-p50-µs")
			b.ReportMetric(us(percentile(every, 0.99)), "chunk-p99-µs")
		})
	}

	// The condition: an open-loop load of 1,000 streaming
	// requests/s, each target in turn, for 3 s. Offered load is the same,
	// so the comparison is latency and what is completed, not saturation.
	openLoop := map[string]latencies{}
	for _, tg := range targets {
		b.Run("open-loop-1000/"+tg.name, func(b *testing.B) {
			for b.Loop() {
				l := openLoopRun(b, client, tg.url, body, 1000, 3*time.Second)
				openLoop[tg.name] = l
				b.ReportMetric(ms(l.p50), "p50-ms")
				b.ReportMetric(ms(l.p99), "p99-ms")
				b.ReportMetric(l.rps, "completed/s")
			}
		})
	}
	if od, ov := openLoop["direct"], openLoop["via-orchestratord"]; od.rps > 0 && ov.rps > 0 {
		b.Logf("open loop at 1000 req/s, via vs direct: p50 +%.3f ms, p99 +%.3f ms, completed/s %.1f%% of direct",
			ms(ov.p50-od.p50), ms(ov.p99-od.p99), 100*ov.rps/od.rps)
	}

	d, v := streams["direct"], streams["via-orchestratord"]
	fd, fv := firstChunk["direct"], firstChunk["via-orchestratord"]
	if d.rps > 0 && v.rps > 0 && fd.p50 > 0 {
		b.Logf("via/direct: p50 %.2fx (%.2f vs %.2f ms), p99 %.2fx (%.2f vs %.2f ms), req/s %.2fx (%.0f vs %.0f); first chunk p50 +%.0fµs (%.0f vs %.0f µs)",
			float64(v.p50)/float64(d.p50), ms(v.p50), ms(d.p50), float64(v.p99)/float64(d.p99), ms(v.p99), ms(d.p99),
			v.rps/d.rps, v.rps, d.rps, us(fv.p50-fd.p50), us(fv.p50), us(fd.p50))
	}
}

// The benchmark's helpers, checked once: a stamped stream through the
// control plane keeps its stamps and its [DONE].
func TestStampedStreamThroughTheProxy(t *testing.T) {
	sim := simengine.New(simengine.Config{Model: "/models/tiny", TokensPerSecond: 1e4})
	eng := startEngine(t, stamped(sim.Handler()))
	in := newInference(t, inferenceOpts{})
	in.announce("pool-0", eng.URL, 1, 1, "tiny")
	c := testClient(t)
	body := []byte(`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":4,` + stampMarker + `}`)
	for _, url := range []string{eng.URL, in.URL} {
		lat, err := streamStamped(c, url+"/v1/chat/completions", body)
		if err != nil {
			t.Fatal(err)
		}
		// role, 4 tokens, finish, usage, [DONE].
		if len(lat) != 8 || slices.Min(lat) < 0 {
			t.Errorf("%s: %d stamps %v", url, len(lat), lat)
		}
		if err := streamOnce(c, url+"/v1/chat/completions", []byte(strings.Replace(string(body), ","+stampMarker, "", 1))); err != nil {
			t.Errorf("%s: %v", url, err)
		}
	}
}

// openLoopRun offers rate streaming requests per second, evenly spaced, for
// window, and returns their latencies and the completion rate.
func openLoopRun(b *testing.B, client *http.Client, url string, body []byte, rate int, window time.Duration) latencies {
	b.Helper()
	var (
		mu     sync.Mutex
		all    []time.Duration
		failed int
		wg     sync.WaitGroup
	)
	interval := time.Second / time.Duration(rate)
	begin := time.Now()
	for next := begin; next.Sub(begin) < window; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			err := streamOnce(client, url, body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			all = append(all, time.Since(t0))
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if failed > 0 {
		b.Errorf("%d of %d streams failed", failed, failed+len(all))
	}
	slices.Sort(all)
	return latencies{p50: percentile(all, 0.50), p99: percentile(all, 0.99), rps: float64(len(all)) / elapsed.Seconds()}
}
