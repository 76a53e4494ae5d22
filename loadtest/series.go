package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llorch/llorch/loadgen"
)

// Second is one second of the run.
type Second struct {
	T         int     `json:"t"` // seconds since the load started
	Phase     string  `json:"phase"`
	Sent      int64   `json:"sent"`
	Completed int64   `json:"completed"`
	Failed    int64   `json:"failed"`  // ended by an error event
	Refused   int64   `json:"refused"` // not admitted
	Broken    int64   `json:"broken"`  // lost, hung, ended twice or unclosed
	InFlight  int64   `json:"in_flight"`
	TTFTP50MS float64 `json:"ttft_p50_ms"` // of first tokens within this second
	TTFTP99MS float64 `json:"ttft_p99_ms"`
	// HeartbeatsSent counts heartbeats the virtual agents sent this
	// second, HeartbeatsFailed those not answered 200.
	HeartbeatsSent   int64 `json:"heartbeats_sent"`
	HeartbeatsFailed int64 `json:"heartbeats_failed"`
	Registrations    int64 `json:"registrations"`
	// CPUPercent (of one core) and RSSBytes of the control plane, when
	// the harness started it; -1 when unknown.
	CPUPercent float64 `json:"cp_cpu_percent"`
	RSSBytes   int64   `json:"cp_rss_bytes"`
	// Nodes by status as the last poll saw them (-1: no poll yet).
	NodesOnline   int      `json:"nodes_online"`
	NodesOffline  int      `json:"nodes_offline"`
	NodesDraining int      `json:"nodes_draining"`
	Events        []string `json:"events,omitempty"` // faults begun or ended
}

// sampler builds the per-second series and prints a progress line each
// second.
type sampler struct {
	t0    time.Time
	tr    *traffic
	f     *fleet
	p     *poller
	cp    ControlPlane
	out   io.Writer
	nodes int

	mu      sync.Mutex
	series  []Second
	events  []string
	phase   string
	lastCPU float64
	lastPID int
	lastAt  time.Time
	prev    [9]int64
}

func (s *sampler) event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.events = append(s.events, msg)
	s.mu.Unlock()
	if s.out != nil {
		fmt.Fprintf(s.out, "%6.1fs  fault: %s\n", time.Since(s.t0).Seconds(), msg)
	}
}

func (s *sampler) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// counters are the running totals the series differences.
func (s *sampler) counters() [9]int64 {
	tr, f := s.tr, s.f
	return [9]int64{tr.sent.Load(), tr.completed.Load(), tr.failed.Load(), tr.refused.Load(),
		tr.lost.Load() + tr.hung.Load() + tr.doubled.Load(), f.hbSent.Load(), f.hbFailed.Load(), f.regSent.Load()}
}

func (s *sampler) run(ctx context.Context) {
	s.mu.Lock()
	s.prev = s.counters()
	s.mu.Unlock()
	if u, ok := s.cp.Usage(); ok {
		s.lastCPU, s.lastPID = u.CPUSeconds, u.PID
	}
	s.lastAt = time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *sampler) sample() {
	now := time.Now()
	tr := s.tr
	cur := s.counters()
	s.mu.Lock()
	sec := Second{T: int(math.Round(now.Sub(s.t0).Seconds())), Phase: s.phase, InFlight: tr.inflight.Load(),
		Sent: cur[0] - s.prev[0], Completed: cur[1] - s.prev[1], Failed: cur[2] - s.prev[2], Refused: cur[3] - s.prev[3],
		Broken: cur[4] - s.prev[4], HeartbeatsSent: cur[5] - s.prev[5], HeartbeatsFailed: cur[6] - s.prev[6],
		Registrations: cur[7] - s.prev[7], CPUPercent: -1, RSSBytes: -1, Events: s.events}
	s.prev, s.events = cur, nil
	if u, ok := s.cp.Usage(); ok {
		cpu := u.CPUSeconds
		if u.PID != s.lastPID { // restarted: its time counts from zero
			s.lastCPU = 0
		}
		sec.CPUPercent = math.Round(100*(cpu-s.lastCPU)/now.Sub(s.lastAt).Seconds()*10) / 10
		sec.RSSBytes = int64(u.RSSBytes)
		s.lastCPU, s.lastPID = cpu, u.PID
	}
	s.lastAt = now
	sec.NodesOnline, sec.NodesOffline, sec.NodesDraining = s.p.counts()
	ttft := tr.takeTTFT()
	slices.Sort(ttft)
	sec.TTFTP50MS, sec.TTFTP99MS = ms(loadgen.Percentile(ttft, 50)), ms(loadgen.Percentile(ttft, 99))
	s.series = append(s.series, sec)
	s.mu.Unlock()
	if s.out != nil {
		fmt.Fprintln(s.out, progressLine(sec, s.nodes))
	}
}

func progressLine(s Second, nodes int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%5ds %-7s sent %4d done %4d fail %3d refused %3d broken %2d inflight %4d ttft p50 %6.1fms p99 %6.1fms  hb %5d/%d fail",
		s.T, s.Phase, s.Sent, s.Completed, s.Failed, s.Refused, s.Broken, s.InFlight, s.TTFTP50MS, s.TTFTP99MS, s.HeartbeatsSent, s.HeartbeatsFailed)
	if s.NodesOnline >= 0 {
		fmt.Fprintf(&b, "  nodes %d/%d online", s.NodesOnline, nodes)
		if s.NodesOffline > 0 {
			fmt.Fprintf(&b, " %d offline", s.NodesOffline)
		}
		if s.NodesDraining > 0 {
			fmt.Fprintf(&b, " %d draining", s.NodesDraining)
		}
	}
	if s.CPUPercent >= 0 {
		fmt.Fprintf(&b, "  cp %5.1f%% cpu %s", s.CPUPercent, mib(uint64(s.RSSBytes)))
	}
	return b.String()
}

func (s *sampler) take() []Second {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Second(nil), s.series...)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
