package config

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/urfave/cli/v2"
)

// PprofFlag is --pprof-addr: where to serve Go's profiles, off by default.
func PprofFlag(envVar string) cli.Flag {
	return &cli.StringFlag{Name: "pprof-addr", Usage: "serve Go's runtime profiles (/debug/pprof/) on this loopback host:port, e.g. 127.0.0.1:6060; off when empty", EnvVars: []string{envVar}}
}

// CheckPprofAddr validates a --pprof-addr value: a loopback host:port,
// since the profiles show memory and stacks and the listener has no token.
func CheckPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--pprof-addr %q: profiles are served on loopback only", addr)
	}
	return nil
}

// ServePprof serves /debug/pprof/ on addr, which must be loopback: the
// profiles show memory and stacks, and the listener has no token. It runs
// until ctx is done.
func ServePprof(ctx context.Context, addr string, log *slog.Logger) error {
	if err := CheckPprofAddr(addr); err != nil {
		return err
	}
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving Go profiles", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	go func() {
		if err := Serve(ctx, ln, mux, time.Second, log); err != nil {
			log.Warn("pprof listener stopped", "err", err)
		}
	}()
	return nil
}
