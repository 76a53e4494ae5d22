package main

import (
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/config"
	"github.com/llorch/llorch/version"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "llorch",
		Usage:   "command-line client of the llorch control plane",
		Version: version.Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "http://127.0.0.1:8080", Usage: "orchestratord URL", EnvVars: []string{"LLORCH_URL", "ORCHESTRATORD_URL"}},
			&cli.StringFlag{Name: "api-token", Usage: "bearer token", EnvVars: []string{"LLORCH_API_TOKEN"}},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "request timeout"},
		},
		Commands:     []*cli.Command{nodesCommand(), submitCommand(), explainCommand(), simEngineCommand()},
		OnUsageError: config.UsageError,
	}
}

func clientFrom(c *cli.Context) *api.Client {
	return &api.Client{
		BaseURL: c.String("url"),
		Token:   c.String("api-token"),
		HTTP:    &http.Client{Timeout: c.Duration("timeout")},
	}
}
