package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/agent"
	"github.com/llorch/llorch/config/configtest"
	"github.com/llorch/llorch/handoff"
)

// Every flag and variable of pool-managerd is in docs/configuration.md's
// pool-managerd table with its default, and the table lists nothing else.
func TestFlagsAreDocumented(t *testing.T) {
	// --node-id defaults to the machine's hostname; the table says so.
	configtest.CheckFlags(t, newApp().Flags, "../../docs/configuration.md", "pool-managerd", configtest.SkipDefault("node-id"))
}

// --help shows each flag's default once (--gpu-max-age used to say its
// real default in its usage and "0s" after it).
func TestHelpShowsOneDefaultEach(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"pool-managerd", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if n := strings.Count(line, "default"); n > 1 {
			t.Errorf("%d defaults in %q", n, strings.TrimSpace(line))
		}
	}
	if !strings.Contains(out.String(), "(default: 3 poll intervals; 90s for dcgm, which samples every 30s) [$POOL_MANAGERD_GPU_MAX_AGE_SECS]") {
		t.Errorf("--gpu-max-age's help does not show its default:\n%s", out.String())
	}
}

// parse runs the app's flag parsing on args and returns the daemon's
// configuration.
func parse(t *testing.T, args ...string) (agent.Config, error) {
	t.Helper()
	app := newApp()
	var cfg agent.Config
	var err error
	app.Action = func(c *cli.Context) error {
		cfg, err = configFrom(c)
		return nil
	}
	if runErr := app.Run(append([]string{"pool-managerd"}, args...)); runErr != nil {
		return cfg, runErr
	}
	return cfg, err
}

func TestConfigFromFlags(t *testing.T) {
	t.Setenv("POOL_MANAGERD_RESCAN_INTERVAL", "45")
	t.Setenv("POOL_MANAGERD_DRAIN_TIMEOUT_SECS", "12")
	cfg, err := parse(t, "--pools", "a, b", "--shutdown-timeout", "7s", "--watch-mode", "poll",
		"--gpu-source", "sim", "--sim-gpus", "2xH200:141GiB", "--gpu-max-age", "9", "--node-id", "n1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"rescan interval (bare seconds from POOL_MANAGERD_RESCAN_INTERVAL)", cfg.RescanInterval, 45 * time.Second},
		{"drain timeout", cfg.DrainTimeout, 12 * time.Second},
		{"shutdown timeout", cfg.ShutdownTimeout, 7 * time.Second},
		{"watch mode", cfg.WatchMode, handoff.ModePoll},
		{"pools", strings.Join(cfg.Pools, ","), "a,b"},
		{"gpu source", cfg.GPU.Source, agent.GPUSim},
		{"sim gpus", len(cfg.GPU.SimGPUs), 1},
		{"gpu max age", cfg.GPU.MaxAge, 9 * time.Second},
		{"node id", cfg.Registration.NodeID, "n1"},
		{"engines", len(cfg.Engines), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	cfg, err = parse(t, "--engine", "sim", "--pools", "p", "--engine-slots", "2")
	if err != nil || len(cfg.Engines) != 1 || cfg.Engines[0].PoolID != "p" || cfg.Engines[0].Slots != 2 {
		t.Fatalf("--engine sim: %+v, %v", cfg.Engines, err)
	}
	if cfg.RescanInterval != 45*time.Second {
		t.Errorf("rescan interval %v", cfg.RescanInterval)
	}
	t.Setenv("POOL_MANAGERD_RESCAN_INTERVAL", "")
	if cfg, _ := parse(t); cfg.RescanInterval != handoff.DefaultRescanInterval {
		t.Errorf("default rescan interval %v, want %v", cfg.RescanInterval, handoff.DefaultRescanInterval)
	}
}

func TestConfigFromFlagsRejects(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--pools", "ok,no way"}, "--pools/POOL_MANAGERD_POOLS"},
		{[]string{"--watch-mode", "inotify"}, "--watch-mode/POOL_MANAGERD_WATCH_MODE"},
		{[]string{"--sim-gpus", "lots"}, "--sim-gpus/POOL_MANAGERD_SIM_GPUS"},
		{[]string{"--rescan-interval", "often"}, "POOL_MANAGERD_RESCAN_INTERVAL"},
		{[]string{"--pools-config", "x.yaml", "--engine", "sim"}, "drop --pools and --engine"},
	} {
		if _, err := parse(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
}
