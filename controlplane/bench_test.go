package controlplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/registry"
)

// BenchmarkHeartbeatHandler measures POST /v2/nodes/{id}/heartbeat through
// the whole handler (routing, auth, JSON decode and validation, registry,
// JSON response) over 10,000 registered nodes, without the network.
func BenchmarkHeartbeatHandler(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	reg := registry.New(registry.Options{Timeout: 30 * time.Second, Logger: quiet})
	h := NewHandler(Options{Registry: reg, Token: "bench-token", Gatherer: prometheus.NewRegistry(), Logger: quiet})
	const nodes = 10_000
	paths := make([]string, nodes)
	for i := range paths {
		id := fmt.Sprintf("node-%05d", i)
		reg.Register(api.RegisterRequest{NodeID: id, Address: "http://127.0.0.1:9200"})
		paths[i] = "/v2/nodes/" + id + "/heartbeat"
	}
	hb := api.HeartbeatRequest{Timestamp: time.Now()}
	for p := range 2 {
		hb.Pools = append(hb.Pools, api.PoolState{PoolID: fmt.Sprintf("pool-%d", p), Ready: true, SlotsTotal: 4, SlotsFree: 2,
			Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081", Models: []string{"llama-3-8b"}})
	}
	for g := range 8 {
		hb.GPUs = append(hb.GPUs, api.GPUState{DeviceID: g, VRAMFreeBytes: 100 << 30, Utilization: 0.5})
	}
	body, err := json.Marshal(hb)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest(http.MethodPost, paths[i%nodes], bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer bench-token")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}
