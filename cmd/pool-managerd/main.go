// Command pool-managerd is llorch's node agent, one per GPU machine. It
// parses its flags into an agent.Config and runs an agent.Daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/tracing"
	"github.com/llorch/llorch/version"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "pool-managerd:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:         "pool-managerd",
		Usage:        "llorch node agent: watches engine handoff files, serves pool status and metrics, registers and heartbeats to orchestratord",
		Version:      version.Version,
		Flags:        flags(),
		Action:       run,
		OnUsageError: config.UsageError,
	}
}

// run serves until SIGTERM or SIGINT, then shuts down (agent.Daemon.Run);
// an error exits 1.
func run(c *cli.Context) error {
	log, err := config.NewLogger(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	cfg, err := configFrom(c)
	if err != nil {
		return err
	}
	cfg.Logger = log
	_, shutdownTracing, err := tracing.Setup(c.Context, "pool-managerd", version.Version, log)
	if err != nil {
		return fmt.Errorf("tracing (OTEL_* variables): %w", err)
	}
	d, err := agent.NewDaemon(cfg)
	if err == nil {
		ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
		err = d.Run(ctx)
		stop()
	}
	if terr := shutdownTracing(context.Background()); terr != nil {
		err = errors.Join(err, fmt.Errorf("tracing shutdown: %w", terr))
	}
	return err
}
