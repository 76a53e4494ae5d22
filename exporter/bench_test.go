package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/enginepoll"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

// vramPools gives pool i the memory of GPU i, as pool-managerd's view of
// the pool table does for the pools collector (package agent).
type vramPools struct {
	table  *pool.Table
	poller *Poller
}

func (v vramPools) Snapshot() []api.PoolState {
	ps := v.table.Snapshot()
	snap, _ := v.poller.Current()
	for i := range ps {
		g := snap.GPUs[i%len(snap.GPUs)]
		ps[i].VRAMTotalBytes, ps[i].VRAMFreeBytes = uint64(g.MemoryTotalBytes), uint64(g.MemoryFreeBytes)
	}
	return ps
}

// BenchmarkScrape is one Prometheus scrape of a full node: 8 simulated
// H200s, 8 ready pools (one per GPU) and their engines' stats, served by
// promhttp from a registry holding the exporter wrapped with node_id. The
// target is well under 1 ms per scrape.
func BenchmarkScrape(b *testing.B) {
	engine := simEngine(b, 4)
	table := pool.NewTable(nil)
	for i := range 8 {
		id := fmt.Sprintf("pool-%d", i)
		table.Upsert("/run/"+id+"_r0.json", handoff.Handoff{PoolID: id, ReplicaID: "r0", Engine: "llamacpp", EngineVersion: "b4747",
			URL: engine.URL, SlotsTotal: 4, SlotsFree: 4, DeviceMask: fmt.Sprint(i), Model: handoff.Model{Path: "/models/m.gguf"}})
	}
	specs, err := ParseSimGPUs("8xH200:141GiB")
	if err != nil {
		b.Fatal(err)
	}
	load := func() []SimLoad {
		var out []SimLoad
		for _, p := range table.Snapshot() {
			out = append(out, SimLoad{GPUs: api.DeviceIndices(p.DeviceMask), VRAMBytes: SimEngineVRAM(p.SlotsTotal)})
		}
		return out
	}
	poller := NewPoller(NewSimSource("bench-node", specs, load), time.Second, time.Hour)
	poller.poll(context.Background())
	engines := enginepoll.New(table, table, 5*time.Second)
	engines.Poll(context.Background())
	if st := engines.Stats(); len(st) != 8 || !st["pool-7"].Up {
		b.Fatalf("engine stats = %+v", st)
	}

	reg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "bench-node"}, reg).MustRegister(New(map[string]Collector{
		"gpu":    NewGPUCollector(poller, "sim"),
		"pools":  NewPoolsCollector(vramPools{table, poller}),
		"engine": NewEngineCollector(engines),
	}, slog.New(slog.DiscardHandler)))
	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept-Encoding", enc)
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			body := rec.Body.String()
			if rec.Code != http.StatusOK || (enc == "identity" && (!strings.Contains(body, `llorch_gpu_memory_used_bytes{gpu="7"`) ||
				!strings.Contains(body, `llorch_pool_slots_busy{node_id="bench-node",pool_id="pool-7"} 0`) ||
				!strings.Contains(body, `llorch_pool_vram_total_bytes{node_id="bench-node",pool_id="pool-7"}`))) {
				b.Fatalf("scrape %d:\n%s", rec.Code, body)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
			}
		})
	}
}
