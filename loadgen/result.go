package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// Outcome is how one request ended.
type Outcome int

const (
	OK         Outcome = iota // 200 and the stream reached [DONE]
	Rejected                  // 429
	Failed                    // transport error, other status, cut stream, error event
	Unfinished                // still running at the hard deadline, cancelled
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Rejected:
		return "rejected"
	case Failed:
		return "failed"
	case Unfinished:
		return "unfinished"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// MarshalText writes the outcome's name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Record is one request.
type Record struct {
	Index   int           `json:"index"`
	At      time.Duration `json:"at_ns"`      // scheduled offset from the start
	Lag     time.Duration `json:"lag_ns"`     // sent this late after At (the arrival clock's slip)
	Sent    time.Time     `json:"sent"`       // when it was sent
	End     time.Duration `json:"end_ns"`     // offset from the start when it ended, any outcome
	Status  int           `json:"status"`     // HTTP status; 0 when none came
	TTFT    time.Duration `json:"ttft_ns"`    // sent -> first content token; 0 when none came
	Latency time.Duration `json:"latency_ns"` // sent -> [DONE]; set for OK only
	Tokens  int           `json:"tokens"`     // content chunks received
	Outcome Outcome       `json:"outcome"`
	Err     string        `json:"error,omitempty"`
}

// Percentiles of a set of durations, nearest rank.
type Percentiles struct {
	P50, P90, P99, Max time.Duration
}

// MarshalJSON writes milliseconds.
func (p Percentiles) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return json.Marshal(struct {
		P50 float64 `json:"p50_ms"`
		P90 float64 `json:"p90_ms"`
		P99 float64 `json:"p99_ms"`
		Max float64 `json:"max_ms"`
	}{ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max)})
}

// Result summarises a run.
type Result struct {
	// Offered requests were sent: Completed + Rejected + Failed + Unfinished.
	Offered    int `json:"offered"`
	Completed  int `json:"completed"`
	Rejected   int `json:"rejected"`
	Failed     int `json:"failed"`
	Unfinished int `json:"unfinished"`
	// TTFT and Latency are over completed requests.
	TTFT    Percentiles `json:"ttft"`
	Latency Percentiles `json:"latency"`
	// Tokens is the tokens of completed requests.
	Tokens int `json:"tokens"`
	// Elapsed is the run: the arrival window, or until the last request
	// ended if that was later.
	Elapsed time.Duration `json:"elapsed_ns"`
	// RequestsPerSecond and TokensPerSecond are Completed and Tokens over
	// Elapsed.
	RequestsPerSecond float64 `json:"requests_per_second"`
	TokensPerSecond   float64 `json:"tokens_per_second"`
	// MaxLag is the arrival clock's worst slip (scheduled -> sent).
	MaxLag time.Duration `json:"max_lag_ns"`
	// Records are the requests, in arrival order.
	Records []Record `json:"-"`
}

// Summarize builds a Result from records over a run of elapsed.
func Summarize(records []Record, elapsed time.Duration) Result {
	r := Result{Offered: len(records), Elapsed: elapsed, Records: records}
	var ttft, lat []time.Duration
	for i := range records {
		rec := &records[i]
		r.MaxLag = max(r.MaxLag, rec.Lag)
		switch rec.Outcome {
		case OK:
			r.Completed++
			r.Tokens += rec.Tokens
			ttft = append(ttft, rec.TTFT)
			lat = append(lat, rec.Latency)
		case Rejected:
			r.Rejected++
		case Failed:
			r.Failed++
		default:
			r.Unfinished++
		}
	}
	r.TTFT, r.Latency = percentiles(ttft), percentiles(lat)
	if s := elapsed.Seconds(); s > 0 {
		r.RequestsPerSecond = float64(r.Completed) / s
		r.TokensPerSecond = float64(r.Tokens) / s
	}
	return r
}

func percentiles(ds []time.Duration) Percentiles {
	slices.Sort(ds)
	return Percentiles{
		P50: Percentile(ds, 50), P90: Percentile(ds, 90), P99: Percentile(ds, 99),
		Max: Percentile(ds, 100),
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by
// nearest rank: the smallest value with at least p % of the values at or
// below it. It is 0 for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(n) / 100)) // p*n first: 0.99*100 is not 99
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}
