package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/loadtest"
)

// loadtestCommand drives a control plane with a virtual fleet, load and
// faults, and checks the invariants (package loadtest).
func loadtestCommand() *cli.Command {
	def := loadtest.DefaultConfig()
	return &cli.Command{
		Name:  "loadtest",
		Usage: "drive a control plane with N virtual node agents, open-loop load and faults; check that nothing is lost",
		Description: `Starts orchestratord (beside llorch, else on PATH; --orchestratord-args passes flags
to it) or drives the one at --url; runs --nodes virtual node agents and their
simulated engines in this process; sends Poisson arrivals of streaming OpenAI
requests and v2 tasks; injects --faults; prints a line per second on stderr,
then a table with the invariants, and writes --json. Exits 1 on any violation.
Faults: AT:KIND[=N][:ARG], comma-separated, e.g.
  10s:kill-node=3,20s:freeze-node=5:5s,30s:restart-control-plane,40s:hang-engine=7
Kinds: ` + strings.Join(kindNames(), ", ") + ` (docs/loadtest.md).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Usage: "drive this control plane instead of starting one (no CPU/RSS figures, no restart faults)"},
			&cli.StringFlag{Name: "api-token", Usage: "bearer token of the control plane (also given to the one started)", EnvVars: []string{"LLORCH_API_TOKEN"}},
			&cli.StringFlag{Name: "orchestratord", Usage: "orchestratord to start (default: beside llorch, else on PATH)"},
			&cli.StringFlag{Name: "orchestratord-args", Usage: "extra flags for the orchestratord started, space-separated; they win over the harness's"},
			&cli.StringFlag{Name: "orchestratord-log", Usage: "write the started orchestratord's output to this file (default: discarded)"},
			&cli.IntFlag{Name: "nodes", Value: def.Nodes, Usage: "virtual node agents"},
			&cli.IntFlag{Name: "pools", Value: def.PoolsPerNode, Usage: "pools per node, one simulated engine each"},
			&cli.IntFlag{Name: "gpus", Value: def.GPUsPerNode, Usage: "simulated H200s per node (pool i on GPU i mod gpus)"},
			&cli.IntFlag{Name: "slots", Value: def.Slots, Usage: "slots per engine (-np)"},
			&cli.Float64Flag{Name: "tokens-per-second", Value: def.TokensPerSecond, Usage: "generation rate of one slot"},
			&cli.StringFlag{Name: "model", Value: def.Model, Usage: "the model every engine serves and every request asks for"},
			&cli.StringFlag{Name: "node-prefix", Value: def.NodePrefix, Usage: "node ids are this and 1..N"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: def.HeartbeatInterval, Usage: "each virtual agent's heartbeat interval (shortened to what the control plane asks, as the agent does)"},
			&cli.Float64Flag{Name: "heartbeat-jitter", Value: def.HeartbeatJitter, Usage: "each interval is spread by ± this fraction"},
			&cli.DurationFlag{Name: "ramp", Usage: "first registrations spread over this (default: one heartbeat interval)"},
			&cli.IntFlag{Name: "connections", Usage: "keep-alive connections the heartbeats share (default: one per node, at most 4000)"},
			&cli.DurationFlag{Name: "node-timeout", Value: 30 * time.Second, Usage: "--node-timeout of the orchestratord started"},
			&cli.DurationFlag{Name: "stale-check-interval", Value: def.StaleCheckInterval, Usage: "--stale-check-interval of the orchestratord started (with --url: the one it runs with)"},
			&cli.Float64Flag{Name: "rate", Value: def.Rate, Usage: "requests per second, Poisson (0: no load, the fleet alone)"},
			&cli.DurationFlag{Name: "duration", Value: def.Duration, Usage: "how long the load lasts; faults are timed from its start"},
			&cli.StringFlag{Name: "mode", Value: def.Mode, Usage: "openai (streaming chat completions), v2 (tasks and their events) or mixed (alternating)"},
			&cli.StringFlag{Name: "max-tokens", Value: "8-64", Usage: "output length: N or MIN-MAX, uniform"},
			&cli.StringFlag{Name: "prompt-words", Value: "4-64", Usage: "prompt length in words: N or MIN-MAX, uniform"},
			&cli.Uint64Flag{Name: "seed", Value: def.Seed, Usage: "seed of arrivals, sizes, node picks and jitter"},
			&cli.StringFlag{Name: "faults", Usage: "fault schedule, AT:KIND[=N][:ARG] comma-separated"},
			&cli.DurationFlag{Name: "warmup", Value: def.Warmup, Usage: "after the fleet is up, before the baseline and the load"},
			&cli.DurationFlag{Name: "drain-timeout", Value: def.DrainTimeout, Usage: "after the load, how long requests may still end; then they count as hung"},
			&cli.DurationFlag{Name: "settle", Value: def.Settle, Usage: "how long goroutines, fds and heap may take to come back to the baseline"},
			&cli.DurationFlag{Name: "poll-interval", Value: def.PollInterval, Usage: "GET /v2/nodes?status=all this often for the invariants (0: off)"},
			&cli.StringFlag{Name: "json", Usage: "write the report (with the per-second series) to this file"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines"},
		},
		Action: runLoadtest,
	}
}

func kindNames() []string {
	var out []string
	for _, k := range loadtest.Kinds() {
		out = append(out, string(k))
	}
	return out
}

func runLoadtest(c *cli.Context) error {
	cfg, err := loadtestConfig(c)
	if err != nil {
		return err
	}
	if !c.Bool("quiet") {
		cfg.Progress = c.App.ErrWriter
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.WriteTable(c.App.Writer)
	if path := c.String("json"); path != "" {
		b, err := json.MarshalIndent(rep, "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if rep.Violations > 0 {
		return fmt.Errorf("loadtest: %d invariant violations", rep.Violations)
	}
	return nil
}

// loadtestConfig validates the flags into the harness's configuration.
func loadtestConfig(c *cli.Context) (loadtest.Config, error) {
	cfg := loadtest.DefaultConfig()
	var err error
	if cfg.Faults, err = loadtest.ParseFaults(c.String("faults")); err != nil {
		return cfg, fmt.Errorf("--faults: %w", err)
	}
	if cfg.MaxTokens, cfg.MaxTokensMax, err = loadtest.ParseRange(c.String("max-tokens")); err != nil {
		return cfg, fmt.Errorf("--max-tokens: %w", err)
	}
	if cfg.PromptWords, cfg.PromptWordsMax, err = loadtest.ParseRange(c.String("prompt-words")); err != nil {
		return cfg, fmt.Errorf("--prompt-words: %w", err)
	}
	cfg.Token = c.String("api-token")
	cfg.Nodes, cfg.PoolsPerNode, cfg.GPUsPerNode, cfg.Slots = c.Int("nodes"), c.Int("pools"), c.Int("gpus"), c.Int("slots")
	cfg.TokensPerSecond, cfg.Model, cfg.NodePrefix = c.Float64("tokens-per-second"), c.String("model"), c.String("node-prefix")
	cfg.HeartbeatInterval, cfg.HeartbeatJitter, cfg.Ramp = c.Duration("heartbeat-interval"), c.Float64("heartbeat-jitter"), c.Duration("ramp")
	cfg.Connections, cfg.StaleCheckInterval = c.Int("connections"), c.Duration("stale-check-interval")
	cfg.Rate, cfg.Duration, cfg.Mode, cfg.Seed = c.Float64("rate"), c.Duration("duration"), c.String("mode"), c.Uint64("seed")
	cfg.Warmup, cfg.DrainTimeout, cfg.Settle, cfg.PollInterval = c.Duration("warmup"), c.Duration("drain-timeout"), c.Duration("settle"), c.Duration("poll-interval")
	if u := c.String("url"); u != "" {
		if u, err = controlPlaneURL(u); err != nil {
			return cfg, err
		}
		cfg.ControlPlane = loadtest.External{URL: u}
		return cfg, nil
	}
	bin := c.String("orchestratord")
	if bin == "" {
		if bin, err = loadtest.FindOrchestratord(); err != nil {
			return cfg, err
		}
	}
	args := append([]string{"--node-timeout", c.Duration("node-timeout").String(),
		"--stale-check-interval", c.Duration("stale-check-interval").String()}, strings.Fields(c.String("orchestratord-args"))...)
	if v, ok := loadtest.FlagValue(args, "stale-check-interval"); ok {
		if cfg.StaleCheckInterval, err = time.ParseDuration(v); err != nil {
			return cfg, fmt.Errorf("--orchestratord-args: --stale-check-interval %q: want a duration", v)
		}
	}
	var log io.Writer
	if path := c.String("orchestratord-log"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return cfg, err
		}
		log = f // closed at exit
	}
	cfg.ControlPlane = &loadtest.Process{Binary: bin, Args: args, Token: cfg.Token, Log: log}
	return cfg, nil
}
