package loadtest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseRange reads "N" or "MIN-MAX" (positive integers, MIN <= MAX).
func ParseRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || lo < 1 || hi < lo {
		return 0, 0, fmt.Errorf("%q: want N or MIN-MAX, 1 <= MIN <= MAX", s)
	}
	return lo, hi, nil
}

// Config is one load test. DefaultConfig holds the defaults of
// `llorch loadtest`'s flags.
type Config struct {
	// ControlPlane is what is tested: Process (started by the harness),
	// External (--url) or a test's own.
	ControlPlane ControlPlane
	Token        string // bearer token of every call to the control plane

	// The virtual fleet.
	Nodes             int
	PoolsPerNode      int
	GPUsPerNode       int
	Slots             int     // per pool (its engine's -np)
	TokensPerSecond   float64 // per slot
	Model             string  // the model every engine serves
	NodePrefix        string  // node ids are NodePrefix + 1..Nodes
	HeartbeatInterval time.Duration
	HeartbeatJitter   float64       // each interval is spread ± this fraction
	Ramp              time.Duration // first registrations spread over this; 0: HeartbeatInterval
	// Connections is how many keep-alive connections the agents'
	// heartbeats share (a real fleet holds one per agent); 0: one per
	// node up to 4,000.
	Connections int
	// StaleCheckInterval is the control plane's --stale-check-interval,
	// for the offline-detection bound.
	StaleCheckInterval time.Duration

	// The load.
	Rate                        float64 // requests per second; 0: none (the fleet alone)
	Duration                    time.Duration
	Mode                        string // openai, v2 or mixed (alternating)
	MaxTokens, MaxTokensMax     int    // output length, uniform in [MaxTokens, MaxTokensMax]
	PromptWords, PromptWordsMax int    // prompt length in words, uniform
	Seed                        uint64
	Faults                      []Fault

	// The run's phases.
	Warmup       time.Duration // after the fleet registered, before the baseline
	DrainTimeout time.Duration // how long requests may still end after the load; then they are hung
	Settle       time.Duration // how long resources may take to return to the baseline
	PollInterval time.Duration // GET /v2/nodes?status=all for the invariants; 0: off

	// Progress, when set, gets a line per second.
	Progress io.Writer
}

// DefaultConfig returns the defaults of llorch loadtest's flags.
func DefaultConfig() Config {
	return Config{
		Nodes: 100, PoolsPerNode: 2, GPUsPerNode: 2, Slots: 4, TokensPerSecond: 50, Model: "sim.gguf", NodePrefix: "lt-",
		HeartbeatInterval: 10 * time.Second, HeartbeatJitter: 0.1, StaleCheckInterval: 10 * time.Second,
		Rate: 20, Duration: time.Minute, Mode: "mixed", MaxTokens: 8, MaxTokensMax: 64, PromptWords: 4, PromptWordsMax: 64,
		Seed: 1, Warmup: 3 * time.Second, DrainTimeout: 30 * time.Second, Settle: 30 * time.Second, PollInterval: 2 * time.Second,
	}
}

// maxConnections caps the default Connections: each is an fd here and in
// the control plane, under a 20,000 open-file limit.
const maxConnections = 4000

func (c *Config) validate() error {
	if c.ControlPlane == nil {
		return errors.New("no control plane: start one or give its URL")
	}
	switch {
	case c.Nodes < 0:
		return fmt.Errorf("--nodes %d: want 0 or more", c.Nodes)
	case c.PoolsPerNode < 1 || c.PoolsPerNode > 64:
		return fmt.Errorf("--pools %d: want 1-64", c.PoolsPerNode)
	case c.GPUsPerNode < 1 || c.GPUsPerNode > 64:
		return fmt.Errorf("--gpus %d: want 1-64", c.GPUsPerNode)
	case c.Slots < 1:
		return fmt.Errorf("--slots %d: want at least 1", c.Slots)
	case !(c.TokensPerSecond > 0) || math.IsInf(c.TokensPerSecond, 0):
		return fmt.Errorf("--tokens-per-second %v: want a positive rate", c.TokensPerSecond)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("--heartbeat-interval %v: want a positive duration", c.HeartbeatInterval)
	case c.HeartbeatJitter < 0 || c.HeartbeatJitter >= 1:
		return fmt.Errorf("--heartbeat-jitter %v: want a fraction in [0, 1)", c.HeartbeatJitter)
	case c.Rate < 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate):
		return fmt.Errorf("--rate %v: want 0 or more requests per second", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("--duration %v: want a positive duration", c.Duration)
	case c.Mode != OpenAI && c.Mode != V2 && c.Mode != "mixed":
		return fmt.Errorf("--mode %q: want openai, v2 or mixed", c.Mode)
	case c.MaxTokens < 1 || c.MaxTokensMax < c.MaxTokens:
		return fmt.Errorf("--max-tokens %d-%d: want 1 <= min <= max", c.MaxTokens, c.MaxTokensMax)
	case c.PromptWords < 1 || c.PromptWordsMax < c.PromptWords:
		return fmt.Errorf("--prompt-words %d-%d: want 1 <= min <= max", c.PromptWords, c.PromptWordsMax)
	case c.Connections < 0:
		return fmt.Errorf("--connections %d: want 0 or more", c.Connections)
	case c.DrainTimeout < 0 || c.Settle < 0 || c.Warmup < 0 || c.PollInterval < 0 || c.Ramp < 0:
		return errors.New("--drain-timeout, --settle, --warmup, --poll-interval and --ramp want 0 or more")
	}
	if c.Connections == 0 {
		c.Connections = min(max(c.Nodes, 1), maxConnections)
	}
	if c.Ramp == 0 {
		c.Ramp = c.HeartbeatInterval
	}
	for _, f := range c.Faults {
		if f.At > c.Duration {
			return fmt.Errorf("fault %s: after the load's --duration %v", f, c.Duration)
		}
		if f.NodeFault() && c.Nodes == 0 {
			return fmt.Errorf("fault %s: needs virtual nodes (--nodes)", f)
		}
		if f.ControlPlaneFault() && !c.ControlPlane.CanRestart() {
			return fmt.Errorf("fault %s: the harness can restart only a control plane it started (not --url)", f)
		}
	}
	return nil
}
