package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
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
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "request timeout (not of event streams, which last as long as their task)", EnvVars: []string{"LLORCH_TIMEOUT"}},
		},
		Commands:     []*cli.Command{nodesCommand(), submitCommand(), explainCommand(), simEngineCommand(), loadtestCommand()},
		OnUsageError: config.UsageError,
		Before: func(c *cli.Context) error {
			u, err := controlPlaneURL(c.String("url"))
			if err != nil {
				return err
			}
			return c.Set("url", u)
		},
	}
}

// controlPlaneURL accepts the control plane's address with or without its
// scheme (127.0.0.1:8080 is http://127.0.0.1:8080) and refuses what is no
// address at all, saying what it wants.
func controlPlaneURL(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url/LLORCH_URL %q: want the control plane's address, such as http://127.0.0.1:8080", raw)
	}
	return strings.TrimSuffix(s, "/"), nil
}

// withHint adds what to do to the errors a newcomer meets first.
func withHint(err error) error {
	var op *net.OpError
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return fmt.Errorf("%w\nthe control plane wants its API token: pass --api-token or set LLORCH_API_TOKEN", err)
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &op) && op.Op == "dial":
		return fmt.Errorf("%w\nis orchestratord running there? start it, or point --url (LLORCH_URL) at it", err)
	}
	return err
}

func clientFrom(c *cli.Context) *api.Client {
	return &api.Client{
		BaseURL: c.String("url"),
		Token:   c.String("api-token"),
		HTTP:    &http.Client{Timeout: c.Duration("timeout")},
	}
}
