//go:build cgo

package exporter

import (
	"context"
	"testing"
)

// BenchmarkNVMLRead is one poll of 8 H200s through the go-nvml mock
// answering the load recording: the Poller's cost, off the scrape path,
// less the driver's own latency.
func BenchmarkNVMLRead(b *testing.B) {
	one := loadNVMLFixture(b, "nvml-load.json")
	var f nvmlFixture
	for i := range 8 {
		d := one.Devices[0]
		d.Index = i
		f.Devices = append(f.Devices, d)
	}
	src, err := NewNVMLSource(fakeNVML(f, nil))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if gpus, err := src.Read(ctx); err != nil || len(gpus) != 8 {
		b.Fatalf("%d GPUs, %v", len(gpus), err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := src.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
