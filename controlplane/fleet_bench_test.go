package controlplane

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/llorch/llorch/admission"
	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/dispatch"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/utilization"
)

// benchRegistry is a registry of nodes x 4 pools, all heartbeating.
func benchRegistry(b *testing.B, nodes int) *registry.Registry {
	b.Helper()
	reg := registry.New(registry.Options{Timeout: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	for n := range nodes {
		id := fmt.Sprintf("gpu-node-%04d.cluster.example.com", n)
		reg.Register(api.RegisterRequest{NodeID: id, Address: "http://127.0.0.1:9200"})
		hb := api.HeartbeatRequest{GPUs: []api.GPUState{{DeviceID: 0}, {DeviceID: 1}, {DeviceID: 2}, {DeviceID: 3}}}
		for p := range 4 {
			hb.Pools = append(hb.Pools, api.PoolState{PoolID: fmt.Sprintf("pool-%d", p), Ready: true, SlotsTotal: 4, SlotsFree: 4,
				Models: []string{"llama-8b"}, DeviceMask: fmt.Sprint(p), URL: "http://127.0.0.1:8081"})
		}
		if err := reg.Heartbeat(id, hb); err != nil {
			b.Fatal(err)
		}
	}
	return reg
}

// BenchmarkSubmitAndRelease measures what a task costs the dispatcher on a
// 1,000-node x 4-pool registry fleet with the embedded scraper as the
// utilisation source: building the candidates, placing, releasing.
func BenchmarkSubmitAndRelease(b *testing.B) {
	reg := benchRegistry(b, 1000)
	scraper := utilization.NewScraper(func() []utilization.Target { return nil }, time.Hour, nil)
	d, err := dispatch.New(dispatch.Options{
		Fleet: RegistryFleet{Registry: reg}, Util: scraper, Queue: admission.New(100, admission.Reject),
		Scheduling: scheduler.Options{StaleAfter: 10 * time.Second, Quarantine: 30 * time.Second},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		j := dispatch.NewJob(fmt.Sprint(i), admission.Interactive, scheduler.Request{Model: "llama-8b", Mode: "auto", AllowFallback: true}, time.Time{})
		if _, _, e := d.Submit(j); e != nil {
			b.Fatal(e)
		}
		p, e, err := j.Wait(b.Context())
		if err != nil || e != nil {
			b.Fatal(err, e)
		}
		d.Release(p, "", dispatch.Succeeded, dispatch.Observation{})
	}
}
