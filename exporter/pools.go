package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llorch/llorch/api"
)

// PoolLister lists the pools to export (the pool table, or a view of it
// with each pool's GPU memory filled in).
type PoolLister interface {
	Snapshot() []api.PoolState
}

// PoolsCollector exports the pool table: readiness, slots, draining, VRAM.
type PoolsCollector struct {
	pools PoolLister

	ready, slotsTotal, slotsFree, draining, vramTotal, vramFree *prometheus.Desc
}

var _ Collector = (*PoolsCollector)(nil)

// NewPoolsCollector exports pools.
func NewPoolsCollector(pools PoolLister) *PoolsCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("llorch_pool_"+name, help, []string{"pool_id"}, nil)
	}
	return &PoolsCollector{
		pools:      pools,
		ready:      d("ready", "1 if the pool has a ready engine replica."),
		slotsTotal: d("slots", "Engine slots of the pool's ready replicas."),
		slotsFree:  d("slots_free", "Free engine slots: the engine's live count where it is scraped, else the handoff file's."),
		draining:   d("draining", "1 if the pool is draining."),
		vramTotal:  d("vram_total_bytes", "GPU memory of the pool's GPUs (its device mask)."),
		vramFree:   d("vram_free_bytes", "Free GPU memory of the pool's GPUs."),
	}
}

// Update implements Collector.
func (c *PoolsCollector) Update(ch chan<- prometheus.Metric) error {
	for _, s := range c.pools.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(s.Ready), s.PoolID)
		ch <- prometheus.MustNewConstMetric(c.slotsTotal, prometheus.GaugeValue, float64(s.SlotsTotal), s.PoolID)
		ch <- prometheus.MustNewConstMetric(c.slotsFree, prometheus.GaugeValue, float64(s.SlotsFree), s.PoolID)
		ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, b2f(s.Draining), s.PoolID)
		if s.VRAMTotalBytes > 0 {
			ch <- prometheus.MustNewConstMetric(c.vramTotal, prometheus.GaugeValue, float64(s.VRAMTotalBytes), s.PoolID)
			ch <- prometheus.MustNewConstMetric(c.vramFree, prometheus.GaugeValue, float64(s.VRAMFreeBytes), s.PoolID)
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
