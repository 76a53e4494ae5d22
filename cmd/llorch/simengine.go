package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/simengine"
)

// simEngineCommand runs the llama.cpp-compatible simulator. Its flags are
// llama-server's (so anything that launches llama-server can launch it) plus
// the simulator's own.
func simEngineCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim-engine",
		Usage: "run a llama.cpp-compatible engine simulator (llama-server's HTTP protocol, no GPU)",
		Description: `Speaks llama-server's protocol: /health (503 while loading), /slots, /metrics,
/props, /v1/models, /tokenize, /completion and the OpenAI routes, streaming or
not. Requests beyond -np slots wait and count in llamacpp:requests_deferred.
/slots is served unless --no-slots, /metrics only with --metrics, as
llama-server does.
Output is deterministic for a seed. Accepts llama-server's flags; the model
file is not read, only named.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Value: "model.gguf", Usage: "model path; its base name is the model name reported"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "listen host"},
			&cli.IntFlag{Name: "port", Value: 8080, Usage: "listen port (0 picks a free one)"},
			&cli.IntFlag{Name: "parallel", Aliases: []string{"np"}, Value: simengine.DefaultParallel, Usage: "slots: concurrent requests"},
			&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Value: simengine.DefaultCtxSize, Usage: "total context, split across slots"},
			&cli.BoolFlag{Name: "metrics", Usage: "serve /metrics"},
			&cli.BoolFlag{Name: "slots", Usage: "serve /slots (the default, as llama-server's; kept for compatibility)"},
			&cli.BoolFlag{Name: "no-slots", Usage: "do not serve /slots (501, as llama-server); wins over --slots"},
			&cli.IntFlag{Name: "n-gpu-layers", Aliases: []string{"ngl"}, Usage: "accepted for llama-server compatibility; ignored"},
			&cli.Float64Flag{Name: "tokens-per-second", Value: simengine.DefaultTokensPerSecond, Usage: "generation rate of one slot"},
			&cli.Float64Flag{Name: "prompt-tokens-per-second", Value: simengine.DefaultPromptTokensPerSecond, Usage: "prompt processing rate"},
			&cli.DurationFlag{Name: "load-time", Usage: "time /health answers 503 (model loading) after start"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the generated text when a request sets none (0: the request's prompt alone decides)"},
		},
		Action: runSimEngine,
	}
}

func runSimEngine(c *cli.Context) error {
	cfg, err := simEngineConfig(c)
	if err != nil {
		return err
	}
	srv := simengine.New(cfg)
	ln, err := config.Listen(net.JoinHostPort(c.String("host"), strconv.Itoa(c.Int("port"))))
	if err != nil {
		return err
	}
	// llama-server prints where it listens; launchers and tests read it.
	fmt.Fprintf(os.Stderr, "main: server is listening on http://%s - starting the main loop (llorch sim-engine, model %s, %d slots)\n", ln.Addr(), srv.ModelName(), c.Int("parallel"))
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log, err := config.NewLogger(os.Stderr, "warn", "text")
	if err != nil {
		return err
	}
	return config.Serve(ctx, ln, srv.Handler(), 5*time.Second, log)
}

// simEngineConfig validates the flags and turns them into the simulator's
// configuration.
func simEngineConfig(c *cli.Context) (simengine.Config, error) {
	for _, f := range []string{"parallel", "ctx-size"} {
		if c.Int(f) < 1 {
			return simengine.Config{}, fmt.Errorf("--%s must be at least 1", f)
		}
	}
	if c.Float64("tokens-per-second") <= 0 || c.Float64("prompt-tokens-per-second") <= 0 {
		return simengine.Config{}, fmt.Errorf("--tokens-per-second and --prompt-tokens-per-second must be positive")
	}
	if c.Int("ctx-size") < c.Int("parallel") {
		return simengine.Config{}, fmt.Errorf("--ctx-size %d is smaller than --parallel %d: each slot needs context", c.Int("ctx-size"), c.Int("parallel"))
	}
	return simengine.Config{
		Model:                 c.String("model"),
		Parallel:              c.Int("parallel"),
		CtxSize:               c.Int("ctx-size"),
		Metrics:               c.Bool("metrics"),
		NoSlots:               c.Bool("no-slots"),
		TokensPerSecond:       c.Float64("tokens-per-second"),
		PromptTokensPerSecond: c.Float64("prompt-tokens-per-second"),
		LoadTime:              c.Duration("load-time"),
		Seed:                  c.Uint64("seed"),
	}, nil
}
