package config_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/config"
)

// runDurationApp runs an app with one duration flag and returns what it
// parsed or the error main would print.
func runDurationApp(t *testing.T, args ...string) (time.Duration, error) {
	t.Helper()
	var got time.Duration
	app := &cli.App{
		Name:         "d",
		Writer:       io.Discard,
		ErrWriter:    io.Discard,
		Flags:        []cli.Flag{config.DurationFlag("node-timeout", 30*time.Second, time.Millisecond, "timeout", "LLORCH_TEST_NODE_TIMEOUT_MS")},
		Action:       func(c *cli.Context) error { got = config.GetDuration(c, "node-timeout"); return nil },
		OnUsageError: config.UsageError,
	}
	err := app.Run(append([]string{"d"}, args...))
	return got, err
}

func TestDurationFlagValues(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  string
		want time.Duration
	}{
		{nil, "", 30 * time.Second},
		{[]string{"--node-timeout", "1500ms"}, "", 1500 * time.Millisecond},
		{[]string{"--node-timeout", "2m"}, "", 2 * time.Minute},
		{nil, "30000", 30 * time.Second}, // a bare number is in the legacy variable's unit
		{[]string{"--node-timeout", "5s"}, "30000", 5 * time.Second},
	} {
		t.Setenv("LLORCH_TEST_NODE_TIMEOUT_MS", tt.env)
		got, err := runDurationApp(t, tt.args...)
		if err != nil || got != tt.want {
			t.Errorf("args %q, env %q: %v, %v; want %v", tt.args, tt.env, got, err, tt.want)
		}
	}
}

// TestDurationFlagErrorsNameFlagAndVariable: a bad value, from the command
// line or from the variable, stops with one line naming both.
func TestDurationFlagErrorsNameFlagAndVariable(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"flag not a duration", []string{"--node-timeout", "soon"}, "", "want a duration such as 30s or a number of milliseconds"},
		{"flag negative", []string{"--node-timeout", "-5s"}, "", "must be positive"},
		{"variable not a duration", nil, "soon", "want a duration such as 30s or a number of milliseconds"},
		{"variable zero", nil, "0", "must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LLORCH_TEST_NODE_TIMEOUT_MS", tt.env)
			_, err := runDurationApp(t, tt.args...)
			if err == nil {
				t.Fatal("a bad value was accepted")
			}
			msg := err.Error()
			for _, want := range []string{tt.want, "--node-timeout", "LLORCH_TEST_NODE_TIMEOUT_MS"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line", msg)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 1500 * time.Millisecond: "1.5s", 30 * time.Second: "30s", 90 * time.Second: "1m30s",
		5 * time.Minute: "5m", 2 * time.Hour: "2h", 2*time.Hour + 5*time.Minute: "2h5m",
	} {
		if got := (&config.Duration{D: d}).String(); got != want {
			t.Errorf("Duration{%v}.String() = %q, want %q", d, got, want)
		}
	}
}
