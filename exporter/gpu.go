package exporter

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GPU is one reading of one GPU. Readings a source could not take are NaN
// and are not exported ("not supported" is not an error).
type GPU struct {
	Index             int
	UUID              string
	Name              string
	ComputeCapability string

	MemoryTotalBytes    float64
	MemoryUsedBytes     float64 // excludes driver-reserved memory (NVML v2)
	MemoryReservedBytes float64
	MemoryFreeBytes     float64
	Utilization         float64 // 0-1
	MemoryUtilization   float64 // 0-1
	TemperatureCelsius  float64
	PowerWatts          float64
	PowerLimitWatts     float64
	SMClockHertz        float64
	ECCUncorrected      float64
	ComputeProcesses    float64
	LastXID             float64
	Processes           []GPUProcess
}

// GPUProcess is one compute process's GPU memory.
type GPUProcess struct {
	PID             uint32
	MemoryUsedBytes float64
}

// NewGPU returns a reading of GPU index with every value unknown.
func NewGPU(index int) GPU {
	n := math.NaN()
	return GPU{Index: index,
		MemoryTotalBytes: n, MemoryUsedBytes: n, MemoryReservedBytes: n, MemoryFreeBytes: n,
		Utilization: n, MemoryUtilization: n, TemperatureCelsius: n, PowerWatts: n,
		PowerLimitWatts: n, SMClockHertz: n, ECCUncorrected: n, ComputeProcesses: n, LastXID: n,
	}
}

// GPUSource reads every GPU of the machine. Read may block (a hung driver);
// the Poller never calls it on the scrape path.
type GPUSource interface {
	Name() string
	Read(ctx context.Context) ([]GPU, error)
}

// Snapshot is the latest poll of a GPU source.
type Snapshot struct {
	GPUs []GPU
	// At is when the GPUs were read; zero before the first success.
	At  time.Time
	Err error
}

// Poller reads a GPU source on an interval into a snapshot.
type Poller struct {
	src      GPUSource
	interval time.Duration
	maxAge   time.Duration
	now      func() time.Time

	mu   sync.Mutex
	snap Snapshot
	// polled is closed after the first poll completes, good or bad.
	polled   chan struct{}
	inFlight bool
}

// NewPoller polls src every interval; a snapshot older than maxAge counts
// as missing.
func NewPoller(src GPUSource, interval, maxAge time.Duration) *Poller {
	return &Poller{src: src, interval: interval, maxAge: maxAge, now: time.Now, polled: make(chan struct{})}
}

// Source returns the polled source.
func (p *Poller) Source() GPUSource { return p.src }

// Run polls until ctx is done. A read that hangs is left to finish on its
// own: the next tick does not start another while one is in flight, and the
// snapshot ages until it is stale.
func (p *Poller) Run(ctx context.Context) {
	p.poll(ctx)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.poll(ctx)
		}
	}
}

// WaitFirst waits until the first poll has completed or ctx ends.
func (p *Poller) WaitFirst(ctx context.Context) {
	select {
	case <-p.polled:
	case <-ctx.Done():
	}
}

func (p *Poller) poll(ctx context.Context) {
	p.mu.Lock()
	if p.inFlight {
		p.mu.Unlock()
		return
	}
	p.inFlight = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		rctx, cancel := context.WithTimeout(ctx, p.interval)
		defer cancel()
		gpus, err := p.src.Read(rctx)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.inFlight = false
		if err != nil {
			p.snap.Err = err
		} else {
			p.snap = Snapshot{GPUs: gpus, At: p.now()}
		}
		select {
		case <-p.polled:
		default:
			close(p.polled)
		}
	}()
	// Wait for the read, but no longer than one interval: a hung read
	// must not stop the loop from noticing ctx.
	t := time.NewTimer(p.interval)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Current returns the snapshot and whether it is fresh (read within
// maxAge, last read succeeded).
func (p *Poller) Current() (Snapshot, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap
	fresh := !s.At.IsZero() && s.Err == nil && p.now().Sub(s.At) <= p.maxAge
	return s, fresh
}

// GPUCollector exports the poller's snapshot as llorch_gpu_* series and the
// source's health as llorch_gpu_source_up.
type GPUCollector struct {
	poller *Poller
	source string

	up, age, info                            *prometheus.Desc
	memTotal, memUsed, memReserved, memFree  *prometheus.Desc
	util, memUtil, temp, power, powerLimit   *prometheus.Desc
	smClock, ecc, procs, lastXID, procMemory *prometheus.Desc
}

var _ Collector = (*GPUCollector)(nil)

// NewGPUCollector exports poller's readings; poller may be nil (no GPU
// source), then only llorch_gpu_source_up{source} 0 is exported.
func NewGPUCollector(poller *Poller, source string) *GPUCollector {
	labels := []string{"gpu", "uuid", "model"}
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("llorch_gpu_"+name, help, append(append([]string{}, labels...), extra...), nil)
	}
	return &GPUCollector{
		poller:      poller,
		source:      source,
		up:          prometheus.NewDesc("llorch_gpu_source_up", "1 if the GPU source answered and its data is fresh.", []string{"source"}, nil),
		age:         prometheus.NewDesc("llorch_gpu_source_data_age_seconds", "Age of the GPU readings being exported.", []string{"source"}, nil),
		info:        d("info", "GPU identity; value 1.", "compute_capability"),
		memTotal:    d("memory_total_bytes", "GPU memory in total."),
		memUsed:     d("memory_used_bytes", "GPU memory used, excluding driver-reserved memory."),
		memReserved: d("memory_reserved_bytes", "GPU memory reserved by the driver."),
		memFree:     d("memory_free_bytes", "GPU memory free."),
		util:        d("utilization_ratio", "Fraction of time a kernel ran on the GPU over the last sample period."),
		memUtil:     d("memory_utilization_ratio", "Fraction of time device memory was read or written."),
		temp:        d("temperature_celsius", "GPU temperature."),
		power:       d("power_watts", "GPU power draw."),
		powerLimit:  d("power_limit_watts", "GPU enforced power limit."),
		smClock:     d("sm_clock_hertz", "SM clock."),
		ecc:         d("ecc_uncorrected_errors_total", "Uncorrected ECC errors since the driver loaded (volatile)."),
		procs:       d("compute_processes", "Compute processes on the GPU."),
		lastXID:     d("last_xid", "Code of the last XID error; 0 for none (DCGM and simulated GPUs; NVML does not report it)."),
		procMemory:  d("process_memory_used_bytes", "GPU memory used by one compute process.", "pid"),
	}
}

// Update implements Collector.
func (c *GPUCollector) Update(ch chan<- prometheus.Metric) error {
	if c.poller == nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, c.source)
		return ErrNoData
	}
	snap, fresh := c.poller.Current()
	if !fresh {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, c.source)
		if !snap.At.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, c.poller.now().Sub(snap.At).Seconds(), c.source)
		}
		if snap.Err != nil {
			return snap.Err
		}
		return ErrNoData
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, c.source)
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, c.poller.now().Sub(snap.At).Seconds(), c.source)
	for i := range snap.GPUs {
		g := &snap.GPUs[i]
		lv := []string{strconv.Itoa(g.Index), g.UUID, g.Name}
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, append(lv, g.ComputeCapability)...)
		gauge := func(d *prometheus.Desc, v float64) {
			if !math.IsNaN(v) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
			}
		}
		gauge(c.memTotal, g.MemoryTotalBytes)
		gauge(c.memUsed, g.MemoryUsedBytes)
		gauge(c.memReserved, g.MemoryReservedBytes)
		gauge(c.memFree, g.MemoryFreeBytes)
		gauge(c.util, g.Utilization)
		gauge(c.memUtil, g.MemoryUtilization)
		gauge(c.temp, g.TemperatureCelsius)
		gauge(c.power, g.PowerWatts)
		gauge(c.powerLimit, g.PowerLimitWatts)
		gauge(c.smClock, g.SMClockHertz)
		gauge(c.procs, g.ComputeProcesses)
		gauge(c.lastXID, g.LastXID)
		if !math.IsNaN(g.ECCUncorrected) {
			ch <- prometheus.MustNewConstMetric(c.ecc, prometheus.CounterValue, g.ECCUncorrected, lv...)
		}
		for _, p := range g.Processes {
			ch <- prometheus.MustNewConstMetric(c.procMemory, prometheus.GaugeValue, p.MemoryUsedBytes, append(lv, strconv.FormatUint(uint64(p.PID), 10))...)
		}
	}
	return nil
}
