// Package utilization feeds placement with what the node agents' exporters
// say about their pools and GPUs: GPU utilisation, free VRAM, the engine
// queue (requests processing and deferred) and per-slot generation speed.
// Two sources: Scraper reads every registered agent's /metrics itself (the
// default: no Prometheus needed), PromQL asks a Prometheus server. Both
// keep a snapshot refreshed off the placement path; each reading carries
// its time, and placement ignores readings older than its staleness bound.
package utilization

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
)

// Versioned is implemented by sources that can tell when their readings
// changed, so placement refreshes its copy only then.
type Versioned interface {
	Version() uint64
}

// Source answers placement's question about one pool.
type Source interface {
	// Get returns the pool's utilisation; the zero At means none known.
	// deviceMask selects the node's GPUs the pool runs on.
	Get(nodeID, poolID, deviceMask string) scheduler.Utilization
}

// readings holds a source's latest reading per node, for both sources:
// replaced or updated under mu, with a version placement's cache compares.
// Version changes after every round of scrapes or successful refresh.
type readings struct {
	mu      sync.RWMutex
	nodes   map[string]nodeReading
	version atomic.Uint64
}

// Version implements Versioned.
func (r *readings) Version() uint64 { return r.version.Load() }

// Get implements Source.
func (r *readings) Get(nodeID, poolID, deviceMask string) scheduler.Utilization {
	r.mu.RLock()
	n, ok := r.nodes[nodeID]
	r.mu.RUnlock()
	if !ok {
		return scheduler.Utilization{}
	}
	return n.utilization(poolID, api.DeviceIndices(deviceMask))
}

// nodeReading is one node's metrics at one moment.
type nodeReading struct {
	at    time.Time
	gpus  map[int]gpuReading
	pools map[string]poolReading
}

type gpuReading struct{ util, free float64 }

type poolReading struct {
	deferred, processing, vramFree float64
	tokens, tokenSeconds           float64
	promptTokens, promptSeconds    float64
}

// Series placement reads, as the agents export them.
const (
	seriesDeferred     = "llorch_pool_requests_deferred"
	seriesProcessing   = "llorch_pool_requests_processing"
	seriesVRAMFree     = "llorch_pool_vram_free_bytes"
	seriesTokens       = "llorch_pool_tokens_predicted_total"
	seriesTokenSeconds = "llorch_pool_tokens_predicted_seconds_total"
	seriesPrompt       = "llorch_pool_prompt_tokens_total"
	seriesPromptSecs   = "llorch_pool_prompt_seconds_total"
	seriesGPUUtil      = "llorch_gpu_utilization_ratio"
	seriesGPUFree      = "llorch_gpu_memory_free_bytes"
)

// record files one sample of a series under its pool or GPU; other series
// are ignored. Both sources decode through it.
func (n nodeReading) record(series, poolID, gpu string, v float64) {
	switch series {
	case seriesGPUUtil, seriesGPUFree:
		idx, err := strconv.Atoi(gpu)
		if err != nil {
			return
		}
		g, ok := n.gpus[idx]
		if !ok {
			g = gpuReading{util: math.NaN(), free: math.NaN()}
		}
		if series == seriesGPUUtil {
			g.util = v
		} else {
			g.free = v
		}
		n.gpus[idx] = g
		return
	}
	p, ok := n.pools[poolID]
	if !ok {
		p = poolReading{vramFree: math.NaN()}
	}
	switch series {
	case seriesDeferred:
		p.deferred = v
	case seriesProcessing:
		p.processing = v
	case seriesVRAMFree:
		p.vramFree = v
	case seriesTokens:
		p.tokens = v
	case seriesTokenSeconds:
		p.tokenSeconds = v
	case seriesPrompt:
		p.promptTokens = v
	case seriesPromptSecs:
		p.promptSeconds = v
	default:
		return
	}
	n.pools[poolID] = p
}

func newNodeReading(at time.Time) nodeReading {
	return nodeReading{at: at, gpus: map[int]gpuReading{}, pools: map[string]poolReading{}}
}

// utilization folds a node reading into what the scheduler reads.
func (n nodeReading) utilization(poolID string, gpuIndices []int) scheduler.Utilization {
	u := scheduler.Utilization{At: n.at, GPUUtilization: math.NaN(), FreeVRAMBytes: math.NaN(), TokenRate: math.NaN(), PromptRate: math.NaN()}
	p, ok := n.pools[poolID]
	if !ok {
		return scheduler.Utilization{}
	}
	u.RequestsDeferred, u.RequestsProcessing = p.deferred, p.processing
	if p.tokenSeconds > 0 {
		u.TokenRate = p.tokens / p.tokenSeconds
	}
	if p.promptSeconds > 0 {
		u.PromptRate = p.promptTokens / p.promptSeconds
	}
	var util, free float64
	n1, n2 := 0, 0
	for i, g := range n.gpus {
		if len(gpuIndices) > 0 && !contains(gpuIndices, i) {
			continue
		}
		if !math.IsNaN(g.util) {
			util += g.util
			n1++
		}
		if !math.IsNaN(g.free) {
			free += g.free
			n2++
		}
	}
	if n1 > 0 {
		u.GPUUtilization = util / float64(n1)
	}
	switch {
	case !math.IsNaN(p.vramFree):
		u.FreeVRAMBytes = p.vramFree
	case n2 > 0:
		u.FreeVRAMBytes = free
	}
	return u
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
