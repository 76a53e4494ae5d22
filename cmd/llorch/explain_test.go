package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llorch/llorch/controlplane"
)

// llorch explain shows a draining node's pool as draining, against a
// control plane running in the test.
func TestExplainShowsDrainingNodes(t *testing.T) {
	cfg := controlplane.DefaultConfig()
	cfg.Addr, cfg.CloudProfile, cfg.Logger = "127.0.0.1:0", true, slog.New(slog.DiscardHandler)
	d, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	base := "http://" + d.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	send := func(path, body string) {
		t.Helper()
		resp, err := c.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	pool := `"pools":[{"pool_id":"pool-0","ready":true,"slots_total":1,"slots_free":1,"engine":"llamacpp","engine_version":"b1","url":"http://127.0.0.1:1","models":["m"]}]`
	for _, id := range []string{"up", "leaving"} {
		send("/v2/nodes/register", `{"node_id":"`+id+`","address":"http://127.0.0.1:9200","pools":["pool-0"]}`)
		send("/v2/nodes/"+id+"/heartbeat", `{`+pool+`}`)
	}
	send("/v2/nodes/leaving/heartbeat", `{"draining":true,`+pool+`}`)

	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &bytes.Buffer{}
	if err := app.Run([]string{"llorch", "--url", base, "explain", "-m", "m"}); err != nil {
		t.Fatal(err)
	}
	var rejected string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "leaving/pool-0") {
			rejected = l
		}
	}
	if !strings.Contains(rejected, "node draining") || strings.Contains(out.String(), "not online") {
		t.Errorf("llorch explain printed:\n%s\nwant leaving/pool-0 rejected as node draining", out.String())
	}
}
