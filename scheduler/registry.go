package scheduler

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultWeights are the score plugins' weights unless --score-weights
// says otherwise. Expected latency decides: at weight 20 a pool 10 %
// slower loses about 180 points. GPU load and free memory (at most 100
// points each) only separate pools of nearly equal latency; session
// affinity (200) is worth a pool about 10 % slower, since the KV cache it
// holds saves prefill; a preferred pool (1,000) is kept up to about twice
// the best latency.
var DefaultWeights = map[string]int64{
	ExpectedLatencyName: 20,
	GPUUtilizationName:  1,
	FreeVRAMName:        1,
	SessionAffinityName: 2,
	PreferName:          10,
}

// scorerOrder fixes the order of score components in explanations.
var scorerOrder = []string{ExpectedLatencyName, GPUUtilizationName, FreeVRAMName, SessionAffinityName, PreferName}

// ParseWeights reads "name=weight,..." over the defaults; weight 0
// disables a scorer.
func ParseWeights(s string) (map[string]int64, error) {
	w := make(map[string]int64, len(DefaultWeights))
	for k, v := range DefaultWeights {
		w[k] = v
	}
	if strings.TrimSpace(s) == "" {
		return w, nil
	}
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("score weight %q: want name=weight", part)
		}
		if _, known := DefaultWeights[name]; !known {
			names := make([]string, 0, len(DefaultWeights))
			for n := range DefaultWeights {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("score weight %q: unknown scorer (known: %s)", name, strings.Join(names, ", "))
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 || n > maxWeight {
			return nil, fmt.Errorf("score weight %s=%s: want 0..%d", name, val, maxWeight)
		}
		w[name] = n
	}
	return w, nil
}

// Options build the default plugin set.
type Options struct {
	Weights map[string]int64
	// StaleAfter bounds how old scraped metrics may be.
	StaleAfter time.Duration
	// Quarantine keeps a pool out this long after a failed dispatch.
	Quarantine time.Duration
}

// NewDefault builds the framework with llorch's plugins.
func NewDefault(opts Options) (*Framework, error) {
	filters := []FilterPlugin{Ready{}, Model{}, Placement{}, DeviceMask{}, Quarantine{Window: opts.Quarantine}}
	plugins := map[string]ScorePlugin{
		ExpectedLatencyName: ExpectedLatency{}, GPUUtilizationName: GPUUtilization{}, FreeVRAMName: FreeVRAM{},
		SessionAffinityName: SessionAffinity{}, PreferName: Prefer{},
	}
	weights := opts.Weights
	if weights == nil {
		weights = DefaultWeights
	}
	var scorers []WeightedScorer
	for _, name := range scorerOrder {
		if w := weights[name]; w > 0 {
			scorers = append(scorers, WeightedScorer{Plugin: plugins[name], Weight: w})
		}
	}
	return NewFramework(filters, scorers, opts.StaleAfter)
}
