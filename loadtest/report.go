package loadtest

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llorch/llorch/loadgen"
)

// Report is a run's result: its setup, what the load and the fleet saw,
// the control plane's cost, the faults, the invariants and the
// per-second series. It is what --json writes.
type Report struct {
	Started    time.Time      `json:"started"`
	Setup      Setup          `json:"setup"`
	Requests   RequestReport  `json:"requests"`
	Heartbeats HeartbeatStats `json:"heartbeats"`
	Control    ControlReport  `json:"control_plane"`
	Faults     []*FaultReport `json:"faults"`
	Invariants []Invariant    `json:"invariants"`
	// Violations sums the invariants' violations: 0 is a pass.
	Violations int      `json:"violations"`
	Series     []Second `json:"series"`
}

// Setup is what was run.
type Setup struct {
	ControlPlane       string   `json:"control_plane"`
	Nodes              int      `json:"nodes"`
	PoolsPerNode       int      `json:"pools_per_node"`
	GPUsPerNode        int      `json:"gpus_per_node"`
	Slots              int      `json:"slots_per_pool"`
	TokensPerSecond    float64  `json:"tokens_per_second"`
	HeartbeatIntervalS float64  `json:"heartbeat_interval_s"`
	HeartbeatJitter    float64  `json:"heartbeat_jitter"`
	Connections        int      `json:"heartbeat_connections"`
	NodeTimeoutS       float64  `json:"node_timeout_s"`
	StaleCheckS        float64  `json:"stale_check_interval_s"`
	Rate               float64  `json:"rate"`
	DurationS          float64  `json:"duration_s"`
	Mode               string   `json:"mode"`
	MaxTokens          [2]int   `json:"max_tokens"`
	PromptWords        [2]int   `json:"prompt_words"`
	Seed               uint64   `json:"seed"`
	Faults             []string `json:"faults"`
	PollIntervalS      float64  `json:"poll_interval_s"`
	CPUs               int      `json:"cpus"`
}

// RequestReport is the load's outcome.
type RequestReport struct {
	Sent      int                        `json:"sent"`
	Outcomes  map[Outcome]int            `json:"outcomes"`
	ByAPI     map[string]map[Outcome]int `json:"by_api"`
	Codes     map[string]int             `json:"codes"` // refusals and error events, by code
	Completed int                        `json:"completed"`
	Failed    int                        `json:"failed"`
	Refused   int                        `json:"refused"`
	Lost      int                        `json:"lost"`
	Hung      int                        `json:"hung"`
	Double    int                        `json:"ended_twice"`
	Unclosed  int                        `json:"unclosed"`
	Cut       int                        `json:"cut_by_control_plane_kill"`
	TTFT      loadgen.Percentiles        `json:"ttft"`    // completed requests, sent → first token
	Latency   loadgen.Percentiles        `json:"latency"` // sent → end
	// CompletedPerSecond is over the load's duration.
	CompletedPerSecond float64 `json:"completed_per_second"`
}

// HeartbeatStats is the virtual fleet's calls to the control plane.
type HeartbeatStats struct {
	Sent                 int64   `json:"sent"`
	Failed               int64   `json:"failed"`
	Registrations        int64   `json:"registrations"`
	RegistrationFailures int64   `json:"registration_failures"`
	FleetReadyS          float64 `json:"fleet_ready_s"` // every node registered and heartbeating
}

// ControlReport is the control plane's cost and state.
type ControlReport struct {
	// CPU (% of one core) and RSS over the load's seconds; -1 when the
	// harness did not start the control plane.
	CPUPercentMean float64 `json:"cpu_percent_mean"`
	CPUPercentP50  float64 `json:"cpu_percent_p50"`
	CPUPercentMax  float64 `json:"cpu_percent_max"`
	RSSMeanBytes   float64 `json:"rss_mean_bytes"`
	RSSMaxBytes    float64 `json:"rss_max_bytes"`
	// Idle is the same over the warm-up (the fleet heartbeating, no
	// load).
	Baseline     Resources `json:"baseline"`
	Final        Resources `json:"final"`
	Bound        Resources `json:"bound"`
	SettledS     float64   `json:"settled_s"` // after the drain, until within the bounds
	Polls        int       `json:"polls"`
	PollFailures int       `json:"poll_failures"`
	PollMS       float64   `json:"last_poll_ms"` // the last GET /v2/nodes?status=all
	Healthy      bool      `json:"healthy_at_end"`
}

// summarize fills the request report.
func summarize(reqs []request, duration time.Duration) RequestReport {
	rr := RequestReport{Sent: len(reqs), Outcomes: map[Outcome]int{}, ByAPI: map[string]map[Outcome]int{}, Codes: map[string]int{}}
	var ttft, lat []time.Duration
	for i := range reqs {
		r := &reqs[i]
		rr.Outcomes[r.outcome]++
		if rr.ByAPI[r.api] == nil {
			rr.ByAPI[r.api] = map[Outcome]int{}
		}
		rr.ByAPI[r.api][r.outcome]++
		if r.code != "" {
			rr.Codes[r.code]++
		}
		if r.outcome == Completed {
			if !r.firstToken.IsZero() {
				ttft = append(ttft, r.firstToken.Sub(r.sent))
			}
			lat = append(lat, r.end.Sub(r.sent))
		}
	}
	o := rr.Outcomes
	rr.Completed, rr.Failed, rr.Refused, rr.Lost, rr.Hung, rr.Double, rr.Unclosed, rr.Cut =
		o[Completed], o[Failed], o[Refused], o[Lost], o[Hung], o[Double], o[Unclosed], o[Cut]
	slices.Sort(ttft)
	slices.Sort(lat)
	pct := func(ds []time.Duration) loadgen.Percentiles {
		return loadgen.Percentiles{P50: loadgen.Percentile(ds, 50), P90: loadgen.Percentile(ds, 90),
			P99: loadgen.Percentile(ds, 99), Max: loadgen.Percentile(ds, 100)}
	}
	rr.TTFT, rr.Latency = pct(ttft), pct(lat)
	if s := duration.Seconds(); s > 0 {
		rr.CompletedPerSecond = math.Round(float64(rr.Completed)/s*100) / 100
	}
	return rr
}

// cpuOf fills the CPU and RSS figures from the load's seconds.
func (c *ControlReport) cpuOf(series []Second) {
	var cpu, rss []float64
	for _, s := range series {
		if s.Phase != "load" || s.CPUPercent < 0 {
			continue
		}
		cpu = append(cpu, s.CPUPercent)
		rss = append(rss, float64(s.RSSBytes))
	}
	c.CPUPercentMean, c.CPUPercentP50, c.CPUPercentMax, c.RSSMeanBytes, c.RSSMaxBytes = -1, -1, -1, -1, -1
	if len(cpu) == 0 {
		return
	}
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	c.CPUPercentMean = math.Round(mean(cpu)*10) / 10
	c.RSSMeanBytes = math.Round(mean(rss))
	c.RSSMaxBytes = slices.Max(rss)
	c.CPUPercentMax = slices.Max(cpu)
	sorted := slices.Clone(cpu)
	slices.Sort(sorted)
	c.CPUPercentP50 = sorted[(len(sorted)-1)/2]
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	s := r.Setup
	fmt.Fprintf(tw, "control plane\t%s\n", s.ControlPlane)
	fmt.Fprintf(tw, "fleet\t%d nodes × %d pools × %d slots at %.0f tokens/s, heartbeat %gs ±%.0f%%, %d connections; node timeout %gs, stale check %gs\n",
		s.Nodes, s.PoolsPerNode, s.Slots, s.TokensPerSecond, s.HeartbeatIntervalS, 100*s.HeartbeatJitter, s.Connections, s.NodeTimeoutS, s.StaleCheckS)
	fmt.Fprintf(tw, "load\t%.1f/s for %gs, %s, max tokens %d-%d, prompt words %d-%d, seed %d\n",
		s.Rate, s.DurationS, s.Mode, s.MaxTokens[0], s.MaxTokens[1], s.PromptWords[0], s.PromptWords[1], s.Seed)
	if len(s.Faults) > 0 {
		fmt.Fprintf(tw, "faults\t%s\n", strings.Join(s.Faults, ","))
	}
	q := r.Requests
	fmt.Fprintf(tw, "\t\n")
	fmt.Fprintf(tw, "requests\t%d sent: %d completed, %d failed (error event), %d refused\n", q.Sent, q.Completed, q.Failed, q.Refused)
	fmt.Fprintf(tw, "lost / hung\t%d lost, %d hung, %d ended twice, %d left open; %d cut by a control-plane kill\n", q.Lost, q.Hung, q.Double, q.Unclosed, q.Cut)
	fmt.Fprintf(tw, "ttft\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", ms(q.TTFT.P50), ms(q.TTFT.P90), ms(q.TTFT.P99), ms(q.TTFT.Max))
	fmt.Fprintf(tw, "latency\tp50 %.1f ms, p99 %.1f ms; %.2f completed/s\n", ms(q.Latency.P50), ms(q.Latency.P99), q.CompletedPerSecond)
	if len(q.Codes) > 0 {
		fmt.Fprintf(tw, "codes\t%s\n", sortedCounts(q.Codes))
	}
	h := r.Heartbeats
	fmt.Fprintf(tw, "heartbeats\t%d sent, %d failed; %d registrations, %d failed; fleet ready in %.1fs\n",
		h.Sent, h.Failed, h.Registrations, h.RegistrationFailures, h.FleetReadyS)
	c := r.Control
	if c.CPUPercentMean >= 0 {
		fmt.Fprintf(tw, "control plane cpu\tmean %.1f%%, p50 %.1f%%, max %.1f%% of a core\n", c.CPUPercentMean, c.CPUPercentP50, c.CPUPercentMax)
		fmt.Fprintf(tw, "control plane rss\tmean %s, max %s\n", mib(uint64(c.RSSMeanBytes)), mib(uint64(c.RSSMaxBytes)))
	}
	fmt.Fprintf(tw, "resources\tgoroutines %.0f → %.0f, fds %.0f → %.0f, heap %s → %s (settled in %.1fs)\n",
		c.Baseline.Goroutines, c.Final.Goroutines, c.Baseline.OpenFDs, c.Final.OpenFDs,
		mib(uint64(c.Baseline.HeapInuse)), mib(uint64(c.Final.HeapInuse)), c.SettledS)
	for _, f := range r.Faults {
		fmt.Fprintf(tw, "fault\t%s\n", faultLine(f))
	}
	fmt.Fprintf(tw, "\t\n")
	for _, i := range r.Invariants {
		mark := "ok"
		switch {
		case !i.Checked:
			mark = "--"
		case i.Violations > 0:
			mark = fmt.Sprintf("FAIL (%d)", i.Violations)
		}
		fmt.Fprintf(tw, "%s\t%s: %s\n", mark, i.Name, i.Detail)
		for _, e := range i.Examples {
			fmt.Fprintf(tw, "\t  %s\n", e)
		}
	}
	verdict := "PASS"
	if r.Violations > 0 {
		verdict = fmt.Sprintf("FAIL: %d violations", r.Violations)
	}
	fmt.Fprintf(tw, "\t\nverdict\t%s\n", verdict)
	tw.Flush()
}

func faultLine(f *FaultReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s at %.1fs", f.Fault, f.StartS)
	if f.EndS > 0 {
		fmt.Fprintf(&b, ", lifted at %.1fs", f.EndS)
	}
	if f.Error != "" {
		fmt.Fprintf(&b, ": NOT INJECTED: %s", f.Error)
	}
	if d := f.OfflineDetection; d != nil && d.Detected == 0 && d.Undetected == d.Nodes {
		fmt.Fprintf(&b, "; %d/%d back before the timeout (%.0f ms): not offline, as wanted", d.Undetected, d.Nodes, d.TimeoutMS)
	} else if d != nil {
		fmt.Fprintf(&b, "; offline after %.0f/%.0f/%.0f ms (min/p50/max; timeout %.0f, bound %.0f), %d/%d detected",
			d.MinMS, d.P50MS, d.MaxMS, d.TimeoutMS, d.BoundMS, d.Detected, d.Nodes)
	}
	if rr := f.Restart; rr != nil {
		fmt.Fprintf(&b, "; down %.0f ms, %d/%d nodes back, p50 %.0f ms, max %.0f ms (limit %.0f ms)",
			rr.DownMS, rr.Back, rr.Nodes, rr.BackP50MS, rr.BackMaxMS, rr.LimitMS)
	}
	if m := f.Memory; m != nil {
		fmt.Fprintf(&b, "; %d/%d streams unread: heap %s → %s peak → %s after, rss %s → %s → %s",
			m.Opened, m.Streams, mib(uint64(m.Before.HeapInuse)), mib(uint64(m.Peak.HeapInuse)), mib(uint64(m.After.HeapInuse)),
			mib(m.Before.RSSBytes), mib(m.Peak.RSSBytes), mib(m.After.RSSBytes))
	}
	if len(f.Statuses) > 0 {
		fmt.Fprintf(&b, "; %s", sortedCounts(f.Statuses))
	}
	if len(f.Violations) > 0 {
		fmt.Fprintf(&b, "; %d violations", len(f.Violations))
	}
	return b.String()
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
