package etcdstore

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/registry/etcdstore/etcdtest"
)

// benchFleet is the nodes the benchmarks heartbeat: one pool and one GPU
// each, as a heartbeat of pool-managerd carries.
const benchFleet = 10000

func benchHeartbeat(i int) api.HeartbeatRequest {
	return api.HeartbeatRequest{Timestamp: time.Now(),
		Pools: []api.PoolState{{PoolID: "pool-0", Ready: true, Models: []string{"llama-3-8b.gguf"}, SlotsTotal: 4, SlotsFree: i % 5,
			URL: "http://127.0.0.1:8081", VRAMTotalBytes: 150e9, VRAMFreeBytes: 40e9, Engine: "llamacpp", SlotsObservedAt: time.Now()}},
		GPUs: []api.GPUState{{DeviceID: 0, VRAMFreeBytes: 40e9, Utilization: 0.37}}}
}

func benchRegistry(n int) *registry.Registry {
	reg := registry.New(registry.Options{Timeout: 30 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	for i := range n {
		reg.Register(api.RegisterRequest{NodeID: fmt.Sprintf("node-%d", i), Address: "http://127.0.0.1:9200", Pools: []string{"pool-0"}})
	}
	return reg
}

// BenchmarkHeartbeat is the heartbeat's registry cost in memory mode and
// in etcd mode, where each heartbeat is also written to a real (embedded,
// single-member) etcd. An etcd-mode op ends when its write is in etcd:
// the writer keeps up, so heartbeats/s is what a replica sustains, not
// what it queues. Run with -benchtime 20000x or more.
func BenchmarkHeartbeat(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		reg := benchRegistry(benchFleet)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			_ = reg.Heartbeat(fmt.Sprintf("node-%d", i%benchFleet), benchHeartbeat(i))
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	})
	b.Run("etcd", func(b *testing.B) {
		e := etcdtest.Start(b)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL()}, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		reg := benchRegistry(0)
		s := New(Options{Client: cli, Registry: reg, Replica: "bench", Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		for i := range benchFleet {
			reg.Register(api.RegisterRequest{NodeID: fmt.Sprintf("node-%d", i), Address: "http://127.0.0.1:9200", Pools: []string{"pool-0"}})
		}
		waitWritten(b, s)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			_ = reg.Heartbeat(fmt.Sprintf("node-%d", i%benchFleet), benchHeartbeat(i))
			if i%1000 == 999 {
				waitWritten(b, s) // do not run ahead of etcd by more than a batch
			}
		}
		waitWritten(b, s)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	})
}

// waitWritten waits until the store has nothing left to write.
func waitWritten(b *testing.B, s *Store) {
	deadline := time.Now().Add(time.Minute)
	for {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == 0 && len(s.wake) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d nodes still not written after a minute", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPropagation is the time from a heartbeat received by replica A
// to its state in replica B's registry, through etcd: heartbeats of 1,000
// nodes in turn, at most one a millisecond, each waited for on B.
func BenchmarkPropagation(b *testing.B) {
	e := etcdtest.Start(b)
	start := func(name string) (*registry.Registry, *Store) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL()}, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		reg := benchRegistry(0)
		s := New(Options{Client: cli, Registry: reg, Replica: name, Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done; cli.Close() })
		return reg, s
	}
	regA, sA := start("a")
	regB, _ := start("b")
	const nodes = 1000
	for i := range nodes {
		regA.Register(api.RegisterRequest{NodeID: fmt.Sprintf("node-%d", i), Address: "http://127.0.0.1:9200", Pools: []string{"pool-0"}})
	}
	waitWritten(b, sA)
	var lags []time.Duration
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		<-tick.C
		id := fmt.Sprintf("node-%d", i%nodes)
		sent := time.Now()
		if err := regA.Heartbeat(id, benchHeartbeat(i)); err != nil {
			b.Fatal(err)
		}
		for {
			n, _ := regB.Get(id)
			if !n.LastHeartbeat.Before(sent) {
				break
			}
			if time.Since(sent) > 10*time.Second {
				b.Fatalf("%s's heartbeat not on replica b after 10 s", id)
			}
			time.Sleep(50 * time.Microsecond)
		}
		lags = append(lags, time.Since(sent))
	}
	slices.Sort(lags)
	if len(lags) > 0 {
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
	}
}
