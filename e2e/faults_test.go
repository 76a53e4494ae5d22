//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/loadtest"
)

// TestFaultSuite is the CI-sized run of `llorch loadtest`: a real
// orchestratord process, 24 virtual node agents, open-loop OpenAI and v2
// load, and every fault kind the harness has, combined in one run. Every
// invariant must hold: no admitted task lost, hung or ended twice, none
// placed on an offline or draining node, no heartbeating node offline,
// every node back after each control-plane restart, resources back to the
// baseline. `make soak` is the same at full size.
func TestFaultSuite(t *testing.T) {
	faults, err := loadtest.ParseFaults(strings.Join([]string{
		"3s:kill-node=2", "4s:freeze-node=2:8s", "5s:freeze-node=1:2s",
		"6s:hang-engine=1:8s", "7s:error-engine=1:8s", "8s:stall-engine=1:8s",
		"9s:slow-reader=6:10s", "10s:bad-heartbeats=40", "11s:clock-skew=2:+1h",
		"12s:register-flood=60", "13s:drain-node=1:6s",
		"16s:restart-control-plane:1s", "26s:kill-control-plane",
	}, ","))
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadtest.DefaultConfig()
	cfg.Nodes, cfg.HeartbeatInterval, cfg.StaleCheckInterval = 24, time.Second, 500*time.Millisecond
	cfg.Rate, cfg.Duration, cfg.Faults = 15, 35*time.Second, faults
	cfg.Warmup, cfg.DrainTimeout, cfg.Settle, cfg.PollInterval = time.Second, 20*time.Second, 20*time.Second, 500*time.Millisecond
	cfg.ControlPlane = &loadtest.Process{
		Binary: filepath.Join(binDir, "orchestratord"),
		Args: []string{"--node-timeout", "4s", "--stale-check-interval", "500ms",
			"--engine-stall-timeout", "3s", "--client-write-timeout", "5s", "--shutdown-grace", "3s"},
		Token: "fault-suite-token",
	}
	cfg.Token = "fault-suite-token"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("loadtest: %v", err)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	t.Logf("report:\n%s", table.String())

	if rep.Violations != 0 {
		t.Errorf("%d invariant violations", rep.Violations)
	}
	for _, inv := range rep.Invariants {
		if !inv.OK() {
			t.Errorf("%s: %s; %v", inv.Name, inv.Detail, inv.Examples)
		}
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			t.Errorf("fault %s not injected: %s", f.Fault, f.Error)
		}
	}
	if len(rep.Faults) != len(faults) {
		t.Errorf("%d faults reported, want %d", len(rep.Faults), len(faults))
	}
	// The faults must have bitten: killed and long-frozen nodes were seen
	// offline, both restarts measured, and the load did complete.
	for _, f := range rep.Faults {
		d := f.OfflineDetection
		switch {
		case strings.Contains(f.Fault, "kill-node"), strings.Contains(f.Fault, "freeze-node=2:8s"):
			if d == nil || d.Detected != d.Nodes {
				t.Errorf("%s: offline detection %+v, want every node detected", f.Fault, d)
			}
		case strings.Contains(f.Fault, "freeze-node=1:2s"):
			if d == nil || d.Detected != 0 {
				t.Errorf("%s: a node frozen for less than the timeout was listed offline: %+v", f.Fault, d)
			}
		case strings.Contains(f.Fault, "control-plane"):
			if f.Restart == nil || f.Restart.Back != f.Restart.Nodes || f.Restart.Nodes == 0 {
				t.Errorf("%s: restart %+v, want every node back", f.Fault, f.Restart)
			}
		}
	}
	if rep.Requests.Completed < int(cfg.Rate*cfg.Duration.Seconds())/2 {
		t.Errorf("only %d requests completed of about %.0f sent", rep.Requests.Completed, cfg.Rate*cfg.Duration.Seconds())
	}
}
