package loadtest

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// agentMetrics is a real pool-managerd's /metrics (two simulated H200s,
// two pools, Go and process collectors; 23 KB, 145 samples), captured
// once. Each virtual agent serves it with its own node id, pools and GPUs
// and live values for the series placement reads, so the control plane's
// scraper parses what it would parse from a real fleet.
//
//go:embed agent_metrics.prom
var agentMetrics string

// What the template is written for: node n1, pools pool-0 and pool-1,
// GPUs 0 and 1. Lines of pool-0 and GPU 0 are repeated for every pool and
// GPU; those of pool-1 and GPU 1 are dropped.
const (
	tmplNode = `node_id="n1"`
	tmplPool = `pool_id="pool-0"`
	tmplGPU  = `gpu="0"`
	tmplUUID = `uuid="GPU-51m00000-0435-dc00-0000-000000000000"`
)

// Segment kinds of a template line.
const (
	segText = iota
	segNode
	segPool
	segGPU
	segUUID
)

type segment struct {
	kind int
	text string
}

// Live values: what a sample's value is computed from.
const (
	valStatic = iota
	valPoolReady
	valPoolSlots
	valPoolSlotsFree
	valPoolSlotsBusy
	valPoolProcessing
	valPoolDeferred
	valPoolDraining
	valPoolTokens
	valPoolTokenSeconds
	valPoolPromptTokens
	valPoolPromptSeconds
	valPoolVRAMTotal
	valPoolVRAMFree
	valGPUUtil
	valGPUFree
	valGPUUsed
)

var liveSeries = map[string]int{
	"llorch_pool_ready":                          valPoolReady,
	"llorch_pool_slots":                          valPoolSlots,
	"llorch_pool_slots_free":                     valPoolSlotsFree,
	"llorch_pool_slots_busy":                     valPoolSlotsBusy,
	"llorch_pool_requests_processing":            valPoolProcessing,
	"llorch_pool_requests_deferred":              valPoolDeferred,
	"llorch_pool_draining":                       valPoolDraining,
	"llorch_pool_tokens_predicted_total":         valPoolTokens,
	"llorch_pool_tokens_predicted_seconds_total": valPoolTokenSeconds,
	"llorch_pool_prompt_tokens_total":            valPoolPromptTokens,
	"llorch_pool_prompt_seconds_total":           valPoolPromptSeconds,
	"llorch_pool_vram_total_bytes":               valPoolVRAMTotal,
	"llorch_pool_vram_free_bytes":                valPoolVRAMFree,
	"llorch_gpu_utilization_ratio":               valGPUUtil,
	"llorch_gpu_memory_free_bytes":               valGPUFree,
	"llorch_gpu_memory_used_bytes":               valGPUUsed,
}

// tmplLine is one line of the template: its segments up to the value, and
// the value (static text or live).
type tmplLine struct {
	segs   []segment
	value  string
	live   int
	repeat int // 0 once, segPool per pool, segGPU per GPU
}

// exporter renders a virtual agent's /metrics.
type exporter struct {
	lines []tmplLine
	bufs  sync.Pool
}

func newExporter(pools, gpus int) (*exporter, error) {
	e := &exporter{bufs: sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}}
	for _, l := range strings.Split(strings.TrimSpace(agentMetrics), "\n") {
		if strings.Contains(l, `pool_id="pool-1"`) || strings.Contains(l, `gpu="1"`) {
			continue
		}
		tl := tmplLine{}
		body := l
		if !strings.HasPrefix(l, "#") {
			i := strings.LastIndexByte(l, ' ')
			if i < 0 {
				return nil, fmt.Errorf("agent metrics template: line %q has no value", l)
			}
			body, tl.value = l[:i+1], l[i+1:]
			name, _, _ := strings.Cut(body, "{")
			tl.live = liveSeries[strings.TrimSpace(name)]
		}
		switch {
		case strings.Contains(body, tmplPool):
			tl.repeat = segPool
		case strings.Contains(body, tmplGPU):
			tl.repeat = segGPU
		}
		tl.segs = split(body)
		e.lines = append(e.lines, tl)
	}
	if pools < 1 || gpus < 1 {
		return nil, fmt.Errorf("a node needs a pool and a GPU (pools %d, GPUs %d)", pools, gpus)
	}
	return e, nil
}

// split cuts a line's text around the placeholders.
func split(s string) []segment {
	var out []segment
	for s != "" {
		best, kind, width := len(s), segText, 0
		for k, p := range map[int]string{segNode: tmplNode, segPool: tmplPool, segGPU: tmplGPU, segUUID: tmplUUID} {
			if i := strings.Index(s, p); i >= 0 && i < best {
				best, kind, width = i, k, len(p)
			}
		}
		if best > 0 {
			out = append(out, segment{segText, s[:best]})
		}
		if kind == segText {
			break
		}
		out = append(out, segment{kind: kind})
		s = s[best+width:]
	}
	return out
}

func (e *exporter) put(b *[]byte) { e.bufs.Put(b) }

// render writes node n's metrics into a pooled buffer (give it back with
// put).
func (e *exporter) render(n *vnode) *[]byte {
	views, util, free, draining := n.views()
	bp := e.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	for _, l := range e.lines {
		switch l.repeat {
		case segPool:
			for i := range views {
				b = e.line(b, l, n, &views[i], 0, util, free, draining)
			}
		case segGPU:
			for g := range util {
				b = e.line(b, l, n, nil, g, util, free, draining)
			}
		default:
			b = e.line(b, l, n, nil, 0, util, free, draining)
		}
	}
	*bp = b
	return bp
}

func (e *exporter) line(b []byte, l tmplLine, n *vnode, v *poolView, gpu int, util []float64, free []uint64, draining bool) []byte {
	for _, s := range l.segs {
		switch s.kind {
		case segText:
			b = append(b, s.text...)
		case segNode:
			b = append(b, `node_id="`...)
			b = append(b, n.id...)
			b = append(b, '"')
		case segPool:
			b = append(b, `pool_id="`...)
			b = append(b, v.p.id...)
			b = append(b, '"')
		case segGPU:
			b = append(b, `gpu="`...)
			b = strconv.AppendInt(b, int64(gpu), 10)
			b = append(b, '"')
		case segUUID:
			b = append(b, `uuid="`...)
			b = append(b, gpuUUID(n.idx, gpu)...)
			b = append(b, '"')
		}
	}
	if l.value == "" { // a comment
		return append(b, '\n')
	}
	val := -1.0
	switch l.live {
	case valStatic:
		b = append(b, l.value...)
		return append(b, '\n')
	case valPoolReady:
		val = 1
	case valPoolSlots:
		val = float64(v.load.Slots)
	case valPoolSlotsFree:
		val = float64(max(v.load.Slots-v.load.Processing, 0))
	case valPoolSlotsBusy, valPoolProcessing:
		val = float64(v.load.Processing)
	case valPoolDeferred:
		val = float64(v.load.Deferred)
	case valPoolDraining:
		val = 0
		if draining {
			val = 1
		}
	case valPoolTokens:
		val = v.load.PredictedTokens
	case valPoolTokenSeconds:
		val = v.load.PredictedSeconds
	case valPoolPromptTokens:
		val = v.load.PromptTokens
	case valPoolPromptSeconds:
		val = v.load.PromptSeconds
	case valPoolVRAMTotal:
		val = float64(v.vramTotal)
	case valPoolVRAMFree:
		val = float64(v.vramFree)
	case valGPUUtil:
		val = util[gpu]
	case valGPUFree:
		val = float64(free[gpu])
	case valGPUUsed:
		val = float64(gpuMemory - gpuReserved - free[gpu])
	}
	b = strconv.AppendFloat(b, val, 'g', -1, 64)
	return append(b, '\n')
}
