package registry

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
)

// benchFleet registers n nodes and returns their ids and a heartbeat body
// like a real agent's: two pools, eight GPUs.
func benchFleet(b *testing.B, n int) (*Registry, []string, api.HeartbeatRequest) {
	b.Helper()
	r := New(Options{Timeout: 30 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%06d", i)
		r.Register(api.RegisterRequest{NodeID: ids[i], Address: "http://127.0.0.1:9200"})
	}
	hb := api.HeartbeatRequest{Timestamp: time.Now()}
	for p := range 2 {
		hb.Pools = append(hb.Pools, api.PoolState{PoolID: fmt.Sprintf("pool-%d", p), Ready: true, SlotsTotal: 4, SlotsFree: 2, Models: []string{"llama-3-8b"}})
	}
	for g := range 8 {
		hb.GPUs = append(hb.GPUs, api.GPUState{DeviceID: g, VRAMFreeBytes: 100 << 30, Utilization: 0.5})
	}
	return r, ids, hb
}

// BenchmarkRegistryHeartbeat measures Registry.Heartbeat over a 200,000-node
// fleet (200k nodes at a 10 s interval is 20,000 heartbeats/s).
func BenchmarkRegistryHeartbeat(b *testing.B) {
	r, ids, hb := benchFleet(b, 200_000)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := r.Heartbeat(ids[i%len(ids)], hb); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				if err := r.Heartbeat(ids[int(i)%len(ids)], hb); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	})
}

// BenchmarkExpireStale measures one stale sweep over 200,000 nodes, none
// expired: the cost the checker pays every interval.
func BenchmarkExpireStale(b *testing.B) {
	r, _, _ := benchFleet(b, 200_000)
	b.ReportAllocs()
	for b.Loop() {
		if got := r.ExpireStale(); len(got) != 0 {
			b.Fatalf("expired %d", len(got))
		}
	}
}
