package loadtest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/simengine"
)

// nodeMode is what a virtual node agent's process is doing.
type nodeMode int

const (
	nodeUp     nodeMode = iota
	nodeKilled          // SIGKILL: every connection drops, nothing answers
	nodeFrozen          // SIGSTOP: every byte waits
)

// engineMode is how a virtual node's engines treat generation requests.
type engineMode int

const (
	engineOK    engineMode = iota
	engineHang             // accept, never answer
	engineError            // answer 500
	engineStall            // stop after the first chunk
)

// fleet is the virtual node agents and their engines: one HTTP server
// serves every engine under /n/<node>/<pool>/ and every agent's /metrics
// and /health under /a/<node>/.
type fleet struct {
	cfg    *Config
	nodes  []*vnode
	base   string // http://127.0.0.1:PORT
	srv    *http.Server
	ln     net.Listener
	export *exporter

	arrivalsMu sync.Mutex
	arrivals   []arrival // generation requests reaching an engine

	sched *scheduler

	hbSent, hbFailed, regSent, regFailed atomic.Int64
}

// arrival is one generation request reaching a virtual engine.
type arrival struct {
	node int32
	pool int16
	at   int64 // unix ns
}

// attempt is one registration or heartbeat a virtual agent sent.
type attempt struct {
	sent     int64 // unix ns
	done     int64
	register bool
	ok       bool
	draining bool // a heartbeat that said draining
}

// vnode is one virtual node agent.
type vnode struct {
	f      *fleet
	idx    int
	id     string
	addr   string // its agent URL: /a/<idx>
	client *api.Client

	mu       sync.Mutex
	mode     nodeMode
	engine   engineMode
	draining bool
	skew     time.Duration
	epoch    int           // bumped by a kill: older requests drop
	changed  chan struct{} // closed and replaced on every change above
	pools    []*vpool
	inflight map[*context.CancelFunc]struct{}
	faulted  bool // under a node fault: not picked for another
	attempts []attempt

	// Heartbeat scheduling (see scheduler): seq orders heap entries, busy
	// is set while a worker holds the node, wake asks for a beat at once.
	seq        uint64
	busy, wake bool
	// Owned by the worker holding the node.
	registered    bool
	forceRegister bool // set by others (under mu): register at the next turn
	interval      time.Duration
	failures      int // registration failures in a row
}

// vpool is one pool of a virtual node: one simulated engine.
type vpool struct {
	id   string
	url  string
	mask string // its GPU
	gpu  int
	eng  *simengine.Server
	once sync.Once
	h    http.Handler
}

func (p *vpool) handler() http.Handler {
	p.once.Do(func() { p.h = p.eng.Handler() })
	return p.h
}

func newFleet(cfg *Config) (*fleet, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fleet{cfg: cfg, ln: ln, base: "http://" + ln.Addr().String()}
	f.export, err = newExporter(cfg.PoolsPerNode, cfg.GPUsPerNode)
	if err != nil {
		ln.Close()
		return nil, err
	}
	f.nodes = make([]*vnode, cfg.Nodes)
	for i := range f.nodes {
		n := &vnode{f: f, idx: i, id: cfg.NodePrefix + strconv.Itoa(i+1), changed: make(chan struct{}),
			inflight: map[*context.CancelFunc]struct{}{}, interval: cfg.HeartbeatInterval}
		n.addr = f.base + "/a/" + strconv.Itoa(i)
		n.pools = n.newPools()
		f.nodes[i] = n
	}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: nopLogger()}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// newPools builds the node's pools with fresh engines (at start, and when
// a killed node comes back).
func (n *vnode) newPools() []*vpool {
	cfg := n.f.cfg
	pools := make([]*vpool, cfg.PoolsPerNode)
	for j := range pools {
		gpu := j % cfg.GPUsPerNode
		pools[j] = &vpool{
			id:   "pool-" + strconv.Itoa(j),
			url:  n.f.base + "/n/" + strconv.Itoa(n.idx) + "/" + strconv.Itoa(j),
			gpu:  gpu,
			mask: strconv.Itoa(gpu),
			eng: simengine.New(simengine.Config{
				Model: cfg.Model, Parallel: cfg.Slots, CtxSize: cfg.Slots * slotContext,
				TokensPerSecond: cfg.TokensPerSecond, Metrics: true,
				Seed: cfg.Seed + uint64(n.idx)*131 + uint64(j),
			}),
		}
	}
	return pools
}

// slotContext is each simulated slot's context: room for the long streams
// of slow readers.
const slotContext = 1 << 16

// close stops the server, releasing every handler blocked by a fault.
func (f *fleet) close() {
	for _, n := range f.nodes {
		n.set(func() { n.mode, n.engine = nodeUp, engineOK })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		_ = f.srv.Close()
	}
}

// closeIdle closes the server's idle keep-alive connections (the control
// plane's idle engine and scrape connections), so the control plane's
// goroutines and fds for them go away before resources are compared.
func (f *fleet) closeIdle() {
	f.srv.SetKeepAlivesEnabled(false)
	f.srv.SetKeepAlivesEnabled(true)
}

// set changes a node's state under its lock and wakes everything waiting
// on it.
func (n *vnode) set(change func()) {
	n.mu.Lock()
	change()
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}

// state is the node's state and the channel closed at its next change.
func (n *vnode) state() (nodeMode, engineMode, int, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mode, n.engine, n.epoch, n.changed
}

// kill drops the node: its in-flight engine requests are cancelled and
// their connections cut.
func (n *vnode) kill() {
	n.set(func() {
		n.mode = nodeKilled
		n.epoch++
		for c := range n.inflight {
			(*c)()
		}
	})
}

// revive brings a killed node back as a fresh agent: new engines, a
// registration at once.
func (n *vnode) revive() {
	pools := n.newPools()
	n.set(func() {
		n.mode, n.engine, n.draining = nodeUp, engineOK, false
		n.pools = pools
	})
	n.f.sched.reregister(n)
}

func (f *fleet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/n/"):
		f.serveEngine(w, r, p[len("/n/"):])
	case strings.HasPrefix(p, "/a/"):
		f.serveAgent(w, r, p[len("/a/"):])
	default:
		http.NotFound(w, r)
	}
}

// nodeOf reads "<idx>/rest" into the node and the rest.
func (f *fleet) nodeOf(p string) (*vnode, string, bool) {
	s, rest, _ := strings.Cut(p, "/")
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= len(f.nodes) {
		return nil, "", false
	}
	return f.nodes[i], rest, true
}

// generation reports whether an engine route generates tokens: the
// requests placement sends.
func generation(r *http.Request, route string) bool {
	if r.Method != http.MethodPost {
		return false
	}
	switch route {
	case "/completion", "/completions", "/v1/completions", "/v1/chat/completions", "/chat/completions":
		return true
	}
	return false
}

func (f *fleet) serveEngine(w http.ResponseWriter, r *http.Request, p string) {
	n, rest, ok := f.nodeOf(p)
	if !ok {
		http.NotFound(w, r)
		return
	}
	ps, route, _ := strings.Cut(rest, "/")
	j, err := strconv.Atoi(ps)
	route = "/" + route
	n.mu.Lock()
	if err != nil || j < 0 || j >= len(n.pools) {
		n.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	pool := n.pools[j]
	n.mu.Unlock()
	gen := generation(r, route)
	if gen {
		f.arrivalsMu.Lock()
		f.arrivals = append(f.arrivals, arrival{node: int32(n.idx), pool: int16(j), at: time.Now().UnixNano()})
		f.arrivalsMu.Unlock()
	}
	epoch, ok := n.gate(w, r, gen)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	n.mu.Lock()
	if n.epoch != epoch {
		n.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	n.inflight[&cancel] = struct{}{}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.inflight, &cancel)
		n.mu.Unlock()
	}()
	r2 := r.WithContext(ctx)
	u := *r.URL
	u.Path, u.RawPath = route, ""
	r2.URL = &u
	fw := &faultWriter{ResponseWriter: w, n: n, epoch: epoch, ctx: ctx, stall: gen}
	pool.handler().ServeHTTP(fw, r2)
	if _, _, now, _ := n.state(); now != epoch {
		// Killed while serving: the connection drops, no clean end.
		panic(http.ErrAbortHandler)
	}
}

// gate holds a request as the node's faults say: a killed node drops it,
// a frozen one (or a hung engine, for generation) holds it until that
// changes, a failing engine answers 500. It returns the node's epoch
// and whether to serve the request.
func (n *vnode) gate(w http.ResponseWriter, r *http.Request, gen bool) (int, bool) {
	for {
		mode, eng, epoch, changed := n.state()
		switch {
		case mode == nodeKilled:
			panic(http.ErrAbortHandler)
		case mode == nodeFrozen || (gen && eng == engineHang):
			select {
			case <-changed:
				continue
			case <-r.Context().Done():
				return 0, false
			}
		case gen && eng == engineError:
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"code":500,"message":"injected engine failure","type":"server_error"}}`))
			return 0, false
		}
		return epoch, true
	}
}

// faultWriter applies a node's faults to a response being written: a kill
// cuts it, a freeze (or, after the first chunk of a generation, a stalled
// engine) holds each write until that changes.
type faultWriter struct {
	http.ResponseWriter
	n      *vnode
	epoch  int
	ctx    context.Context
	stall  bool // a generation: subject to stall-engine
	writes int
}

func (fw *faultWriter) hold() error {
	for {
		mode, eng, epoch, changed := fw.n.state()
		switch {
		case mode == nodeKilled || epoch != fw.epoch:
			panic(http.ErrAbortHandler)
		case mode == nodeFrozen || (fw.stall && eng == engineStall && fw.writes >= 1):
			select {
			case <-changed:
				continue
			case <-fw.ctx.Done():
				return fw.ctx.Err()
			}
		}
		return nil
	}
}

func (fw *faultWriter) Write(b []byte) (int, error) {
	if err := fw.hold(); err != nil {
		return 0, err
	}
	fw.writes++
	return fw.ResponseWriter.Write(b)
}

func (fw *faultWriter) WriteHeader(code int) {
	if fw.hold() == nil {
		fw.ResponseWriter.WriteHeader(code)
	}
}

func (fw *faultWriter) Flush() {
	if fw.hold() != nil {
		return
	}
	if f, ok := fw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (fw *faultWriter) Unwrap() http.ResponseWriter { return fw.ResponseWriter }

func (f *fleet) serveAgent(w http.ResponseWriter, r *http.Request, p string) {
	n, rest, ok := f.nodeOf(p)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if _, ok := n.gate(w, r, false); !ok {
		return
	}
	switch rest {
	case "metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		buf := f.export.render(n)
		_, _ = w.Write(*buf)
		f.export.put(buf)
	case "health":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok","version":"loadtest"}`))
	default:
		http.NotFound(w, r)
	}
}

// Pool and GPU figures a virtual node reports.
const (
	gpuMemory     = 141 << 30 // an H200
	gpuReserved   = 600 << 20 // driver-reserved
	modelMemory   = 4 << 30   // a pool's weights
	slotMemory    = 1 << 30   // a busy slot's KV cache
	engineVersion = simengine.BuildInfo
)

// poolView is one pool's state as the agent would report it.
type poolView struct {
	p         *vpool
	load      simengine.Load
	vramFree  uint64
	vramTotal uint64
}

// views reads every pool's engine once.
func (n *vnode) views() ([]poolView, []float64, []uint64, bool) {
	n.mu.Lock()
	pools, draining := n.pools, n.draining
	n.mu.Unlock()
	cfg := n.f.cfg
	out := make([]poolView, len(pools))
	busy := make([]float64, cfg.GPUsPerNode)
	slots := make([]float64, cfg.GPUsPerNode)
	used := make([]uint64, cfg.GPUsPerNode)
	for i, p := range pools {
		l := p.eng.Load()
		out[i] = poolView{p: p, load: l}
		busy[p.gpu] += float64(l.Processing)
		slots[p.gpu] += float64(l.Slots)
		used[p.gpu] += modelMemory + uint64(l.Processing)*slotMemory
	}
	util := make([]float64, cfg.GPUsPerNode)
	free := make([]uint64, cfg.GPUsPerNode)
	for g := range util {
		if slots[g] > 0 {
			util[g] = busy[g] / slots[g]
		}
		free[g] = gpuMemory - gpuReserved - min(used[g], gpuMemory-gpuReserved)
	}
	for i := range out {
		out[i].vramTotal = gpuMemory
		out[i].vramFree = free[out[i].p.gpu]
	}
	return out, util, free, draining
}

// heartbeatBody is what the node's agent would send now.
func (n *vnode) heartbeatBody() api.HeartbeatRequest {
	views, util, free, draining := n.views()
	n.mu.Lock()
	skew := n.skew
	n.mu.Unlock()
	now := time.Now().Add(skew).UTC()
	polled := now.Add(-500 * time.Millisecond) // an engine poll half a second old
	hb := api.HeartbeatRequest{Timestamp: now, Draining: draining,
		Pools: make([]api.PoolState, len(views)), GPUs: make([]api.GPUState, len(util))}
	for i, v := range views {
		freeSlots := max(v.load.Slots-v.load.Processing, 0)
		rep := api.ReplicaState{ReplicaID: "r0", URL: v.p.url, Ready: true, SlotsTotal: v.load.Slots, SlotsFree: freeSlots,
			EngineVersion: engineVersion, RequestsDeferred: v.load.Deferred, SlotsObservedAt: polled}
		hb.Pools[i] = api.PoolState{PoolID: v.p.id, Ready: true, Draining: draining, SlotsTotal: v.load.Slots, SlotsFree: freeSlots,
			VRAMTotalBytes: v.vramTotal, VRAMFreeBytes: v.vramFree, Engine: "llamacpp", EngineVersion: engineVersion,
			URL: v.p.url, Models: []string{n.f.cfg.Model}, DeviceMask: v.p.mask, RequestsDeferred: v.load.Deferred,
			SlotsObservedAt: polled, Replicas: []api.ReplicaState{rep}}
	}
	for g := range util {
		hb.GPUs[g] = api.GPUState{DeviceID: g, VRAMFreeBytes: free[g], Utilization: util[g]}
	}
	return hb
}

// registration is what the node's agent registers with.
func (n *vnode) registration() api.RegisterRequest {
	n.mu.Lock()
	pools := n.pools
	n.mu.Unlock()
	ids := make([]string, len(pools))
	for i, p := range pools {
		ids[i] = p.id
	}
	gpus := make([]api.GPUInfo, n.f.cfg.GPUsPerNode)
	for g := range gpus {
		gpus[g] = api.GPUInfo{DeviceID: g, UUID: gpuUUID(n.idx, g), Name: "NVIDIA H200 (simulated)",
			VRAMTotalBytes: gpuMemory, ComputeCapability: "9.0"}
	}
	return api.RegisterRequest{NodeID: n.id, MachineID: n.id, Address: n.addr, Pools: ids,
		Capabilities: api.Capabilities{GPUs: gpus, CPUCores: 64, RAMTotalBytes: 1 << 40}, Version: "loadtest"}
}

func gpuUUID(node, gpu int) string {
	return fmt.Sprintf("GPU-10ad7e57-%04x-%04x-0000-%012x", gpu, node>>16&0xffff, node)
}

// record logs one call to the control plane.
func (n *vnode) record(a attempt) {
	n.mu.Lock()
	n.attempts = append(n.attempts, a)
	n.mu.Unlock()
}

// history returns a copy of the node's calls.
func (n *vnode) history() []attempt {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]attempt(nil), n.attempts...)
}

// lastAck is the end of the node's last successful call, 0 if none.
func (n *vnode) lastAck() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.attempts) - 1; i >= 0; i-- {
		if n.attempts[i].ok {
			return n.attempts[i].done
		}
	}
	return 0
}

func (f *fleet) arrivalLog() []arrival {
	f.arrivalsMu.Lock()
	defer f.arrivalsMu.Unlock()
	return append([]arrival(nil), f.arrivals...)
}

// nopLogger silences the server's own log: a killed node's dropped
// connections are the point, not news.
func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }
