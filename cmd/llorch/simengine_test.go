package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/simengine"
)

// simEngineWith parses args as `llorch sim-engine` does and returns the
// simulator's configuration, without listening.
func simEngineWith(t *testing.T, args ...string) (simengine.Config, error) {
	t.Helper()
	cmd := simEngineCommand()
	var cfg simengine.Config
	cmd.Action = func(c *cli.Context) error {
		var err error
		cfg, err = simEngineConfig(c)
		return err
	}
	app := &cli.App{Name: "llorch", Commands: []*cli.Command{cmd}}
	err := app.Run(append([]string{"llorch", "sim-engine"}, args...))
	return cfg, err
}

// TestSimEngineSlotsFlags: /slots is served by default, as llama-server's
// (`--slots, --no-slots`, default enabled); --no-slots turns it off, also
// after --slots, as the supervisor's command line followed by an operator's
// extra arguments gives it.
func TestSimEngineSlotsFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int // status of GET /slots
	}{
		{"default", nil, http.StatusOK},
		{"--slots", []string{"--slots"}, http.StatusOK},
		{"--no-slots", []string{"--no-slots"}, http.StatusNotImplemented},
		{"supervisor line then --no-slots", []string{"-m", "/m/x.gguf", "-np", "2", "-c", "512", "--metrics", "--slots", "--no-slots"}, http.StatusNotImplemented},
		{"--no-slots then --slots", []string{"--no-slots", "--slots"}, http.StatusNotImplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := simEngineWith(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(simengine.New(cfg).Handler())
			defer hs.Close()
			resp, err := hs.Client().Get(hs.URL + "/slots")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET /slots = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestSimEngineFlagValidation(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-np", "0"}, "--parallel must be at least 1"},
		{[]string{"-np", "4", "-c", "2"}, "--ctx-size 2 is smaller than --parallel 4"},
		{[]string{"--tokens-per-second", "0"}, "must be positive"},
	}
	for _, tt := range tests {
		if _, err := simEngineWith(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}
