package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llorch/llorch/api"
)

// maxPollAge is maxPollAge: the registry dates no engine poll
// older than this (kept apart so the CLI does not link the registry).
const maxPollAge = time.Minute

// FaultReport is what one fault did and what it found.
type FaultReport struct {
	Fault  string   `json:"fault"`
	StartS float64  `json:"start_s"`         // from the start of the load
	EndS   float64  `json:"end_s,omitempty"` // when it was lifted; absent: it lasted to the end
	Nodes  []string `json:"nodes,omitempty"`
	// Error says why the fault could not be injected (too few healthy
	// nodes, a control plane the harness cannot restart).
	Error string `json:"error,omitempty"`
	// OfflineDetection (kill-node, freeze-node): per node, from its last
	// answered heartbeat to the control plane listing it offline.
	OfflineDetection *Detection `json:"offline_detection,omitempty"`
	// Restart (restart- and kill-control-plane): downtime and how soon
	// the fleet was back.
	Restart *RestartReport `json:"restart,omitempty"`
	// Statuses (bad-heartbeats, register-flood): the answers, by kind of
	// request and status.
	Statuses map[string]int `json:"statuses,omitempty"`
	// Memory (slow-reader): the control plane before, at its peak during
	// and after.
	Memory *MemoryReport `json:"memory,omitempty"`
	// Violations the fault's own checks found.
	Violations []string `json:"violations,omitempty"`
}

// Detection is how long the control plane took to list stopped nodes
// offline, against its configured timeout.
type Detection struct {
	TimeoutMS  float64   `json:"timeout_ms"`
	SweepMS    float64   `json:"stale_check_interval_ms"`
	PollMS     float64   `json:"poll_ms"` // the precision of the figures
	Nodes      int       `json:"nodes"`
	Detected   int       `json:"detected"`
	MinMS      float64   `json:"min_ms,omitempty"`
	P50MS      float64   `json:"p50_ms,omitempty"`
	MaxMS      float64   `json:"max_ms,omitempty"`
	Undetected int       `json:"undetected,omitempty"` // still listed online when it came back or the run ended
	BoundMS    float64   `json:"bound_ms"`             // timeout + stale check interval + poll + 1 s
	PerNodeMS  []float64 `json:"per_node_ms,omitempty"`
}

// RestartReport is one control-plane restart.
type RestartReport struct {
	Kill   bool    `json:"kill"`
	DownMS float64 `json:"down_ms"` // signal to the new one answering /health
	// Nodes were up throughout; Back of them registered with the new one
	// within LimitMS (one heartbeat interval, plus its jitter and 1 s).
	Nodes     int      `json:"nodes"`
	Back      int      `json:"back"`
	BackP50MS float64  `json:"back_p50_ms"`
	BackP99MS float64  `json:"back_p99_ms"`
	BackMaxMS float64  `json:"back_max_ms"`
	LimitMS   float64  `json:"limit_ms"`
	Late      []string `json:"late,omitempty"`
}

// MemoryReport is the control plane's memory around a slow-reader fault.
type MemoryReport struct {
	Streams int       `json:"streams"`
	Opened  int       `json:"opened"`
	Before  Resources `json:"before"`
	Peak    Resources `json:"peak"`
	After   Resources `json:"after"`
	// HeapGrowthPerStream is (peak - before) heap over the streams.
	HeapGrowthPerStream float64 `json:"heap_growth_per_stream_bytes"`
	BoundBytes          float64 `json:"bound_bytes"`
}

// restartWindow is a control-plane restart the harness made.
type restartWindow struct {
	kill     bool
	stop, up time.Time
}

// injector runs the fault schedule.
type injector struct {
	cfg         *Config
	f           *fleet
	cp          ControlPlane
	c           *cpClient
	s           *sampler
	t0          time.Time
	stale       time.Duration // the control plane's stale-check interval
	nodeTimeout time.Duration

	mu       sync.Mutex
	rng      *mrand.Rand
	reports  []*FaultReport
	restarts []restartWindow
	lift     []func() // ends of faults still on
	wg       sync.WaitGroup
}

// run injects each fault at its time until ctx ends; faults with a
// duration are lifted after it in their own goroutines.
func (in *injector) run(ctx context.Context) {
	for _, f := range in.cfg.Faults {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(in.t0.Add(f.At))):
		}
		rep := &FaultReport{Fault: f.String(), StartS: since(in.t0)}
		in.mu.Lock()
		in.reports = append(in.reports, rep)
		in.mu.Unlock()
		in.wg.Go(func() { in.inject(ctx, f, rep) })
	}
}

// wait waits for every fault's goroutine.
func (in *injector) wait() { in.wg.Wait() }

// liftAll ends the faults still on (thaws, engines answering again); a
// killed node without a duration stays dead.
func (in *injector) liftAll() {
	in.mu.Lock()
	lift := in.lift
	in.lift = nil
	in.mu.Unlock()
	for _, l := range lift {
		l()
	}
}

func since(t0 time.Time) float64 { return float64(time.Since(t0).Milliseconds()) / 1000 }

// pick chooses n healthy nodes, marking them faulted.
func (in *injector) pick(n int) ([]*vnode, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var healthy []*vnode
	for _, v := range in.f.nodes {
		v.mu.Lock()
		ok := !v.faulted && v.mode == nodeUp && v.engine == engineOK && !v.draining
		v.mu.Unlock()
		if ok {
			healthy = append(healthy, v)
		}
	}
	if len(healthy) < n {
		return nil, fmt.Errorf("%d healthy nodes, the fault wants %d", len(healthy), n)
	}
	in.rng.Shuffle(len(healthy), func(i, j int) { healthy[i], healthy[j] = healthy[j], healthy[i] })
	out := healthy[:n]
	slices.SortFunc(out, func(a, b *vnode) int { return a.idx - b.idx })
	for _, v := range out {
		v.mu.Lock()
		v.faulted = true
		v.mu.Unlock()
	}
	return out, nil
}

func ids(nodes []*vnode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.id
	}
	return out
}

// hold runs end after d (d 0: when the drain ends, by liftAll), once.
func (in *injector) hold(ctx context.Context, d time.Duration, rep *FaultReport, what string, end func()) {
	var once sync.Once
	lift := func() {
		once.Do(func() {
			end()
			in.mu.Lock()
			rep.EndS = since(in.t0)
			in.mu.Unlock()
			in.s.event("%s lifted", what)
		})
	}
	in.mu.Lock()
	in.lift = append(in.lift, lift)
	in.mu.Unlock()
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
		lift()
	case <-ctx.Done():
	}
}

func (in *injector) inject(ctx context.Context, f Fault, rep *FaultReport) {
	fail := func(err error) {
		in.mu.Lock()
		rep.Error = err.Error()
		in.mu.Unlock()
		in.s.event("%s: not injected: %v", f, err)
	}
	var nodes []*vnode
	if f.NodeFault() {
		var err error
		if nodes, err = in.pick(f.Count); err != nil {
			fail(err)
			return
		}
		rep.Nodes = ids(nodes)
		in.s.event("%s: %s", f, strings.Join(abbrev(rep.Nodes, 8), " "))
	} else {
		in.s.event("%s", f)
	}
	switch f.Kind {
	case KillNode:
		for _, n := range nodes {
			n.kill()
		}
		in.wg.Go(func() { in.detectOffline(ctx, nodes, rep) })
		in.hold(ctx, f.Arg, rep, f.String(), func() {
			if f.Arg > 0 {
				for _, n := range nodes {
					n.revive()
				}
			}
		})
	case FreezeNode:
		for _, n := range nodes {
			n.set(func() { n.mode = nodeFrozen })
		}
		in.wg.Go(func() { in.detectOffline(ctx, nodes, rep) })
		in.hold(ctx, f.Arg, rep, f.String(), func() {
			for _, n := range nodes {
				n.set(func() { n.mode = nodeUp })
				in.f.sched.wakeNow(n)
			}
		})
	case DrainNode:
		for _, n := range nodes {
			n.set(func() { n.draining = true })
			in.f.sched.wakeNow(n)
		}
		in.hold(ctx, f.Arg, rep, f.String(), func() {
			for _, n := range nodes {
				cctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
				_ = n.client.Deregister(cctx, n.id)
				cancel()
				n.set(func() { n.draining = false })
				in.f.sched.reregister(n)
			}
		})
	case HangEngine, ErrorEngine, StallEngine:
		mode := map[Kind]engineMode{HangEngine: engineHang, ErrorEngine: engineError, StallEngine: engineStall}[f.Kind]
		for _, n := range nodes {
			n.set(func() { n.engine = mode })
		}
		in.hold(ctx, f.Arg, rep, f.String(), func() {
			for _, n := range nodes {
				n.set(func() { n.engine = engineOK })
			}
		})
	case ClockSkew:
		for _, n := range nodes {
			n.set(func() { n.skew = f.Arg })
			in.f.sched.wakeNow(n)
		}
		in.checkSkew(ctx, nodes, rep)
	case BadHeartbeats:
		in.badHeartbeats(ctx, f.Count, rep)
	case RegisterFlood:
		in.registerFlood(ctx, f.Count, rep)
	case SlowReader:
		in.slowReaders(ctx, f, rep)
	case RestartControlPlane, KillControlPlane:
		if !in.cp.CanRestart() {
			fail(fmt.Errorf("the harness did not start the control plane (--url): it cannot restart it"))
			return
		}
		in.restart(ctx, f, rep)
	}
}

func abbrev(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(slices.Clone(s[:n]), fmt.Sprintf("(+%d)", len(s)-n))
}

func (in *injector) violate(rep *FaultReport, format string, args ...any) {
	in.mu.Lock()
	rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
	in.mu.Unlock()
}

// detectPoll is how often a stopped node is looked up while its
// detection is due.
const detectPoll = 100 * time.Millisecond

// detectOffline measures, for nodes that just stopped heartbeating, the
// time from each one's last answered call to the control plane listing it
// offline (GET /v2/nodes/{id}: one node per call, cheap at any fleet
// size). It stops following a node that comes back.
func (in *injector) detectOffline(ctx context.Context, nodes []*vnode, rep *FaultReport) {
	timeout, sweep := in.nodeTimeout, in.stale
	det := &Detection{TimeoutMS: msOf(timeout), SweepMS: msOf(sweep), PollMS: msOf(detectPoll), Nodes: len(nodes),
		BoundMS: msOf(timeout + sweep + detectPoll + time.Second)}
	type pending struct {
		n    *vnode
		last int64
	}
	var open []pending
	for _, n := range nodes {
		open = append(open, pending{n, n.lastAck()})
	}
	var found []float64
	tick := time.NewTicker(detectPoll)
	defer tick.Stop()
	for len(open) > 0 {
		select {
		case <-ctx.Done():
			det.Undetected += len(open)
			open = nil
			continue
		case <-tick.C:
		}
		keep := open[:0]
		for _, p := range open {
			mode, _, _, _ := p.n.state()
			if mode == nodeUp { // back before it went offline
				det.Undetected++
				continue
			}
			if time.Since(time.Unix(0, p.last)) < timeout-time.Second {
				keep = append(keep, p)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, code, err := in.c.node(cctx, p.n.id)
			cancel()
			if err == nil && code == http.StatusOK && st.Status == api.StatusOffline {
				d := time.Since(time.Unix(0, p.last))
				found = append(found, msOf(d))
				if d < timeout-detectPoll {
					in.violate(rep, "%s listed offline %v after its last heartbeat, before the %v timeout", p.n.id, d.Round(time.Millisecond), timeout)
				}
				continue
			}
			keep = append(keep, p)
		}
		open = keep
	}
	slices.Sort(found)
	det.Detected = len(found)
	if len(found) > 0 {
		det.MinMS, det.P50MS, det.MaxMS = found[0], found[(len(found)-1)/2], found[len(found)-1]
		if len(found) <= 100 {
			det.PerNodeMS = found
		}
		if det.MaxMS > det.BoundMS {
			in.violate(rep, "a stopped node was listed offline %.0f ms after its last heartbeat: over timeout + stale check + %v (%.0f ms)",
				det.MaxMS, detectPoll+time.Second, det.BoundMS)
		}
	}
	in.mu.Lock()
	rep.OfflineDetection = det
	in.mu.Unlock()
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// checkSkew waits two heartbeats, then checks each skewed node is online
// with its engine polls dated in the control plane's clock (within the
// minute the registry clamps them to).
func (in *injector) checkSkew(ctx context.Context, nodes []*vnode, rep *FaultReport) {
	select {
	case <-time.After(2*in.cfg.HeartbeatInterval + time.Second):
	case <-ctx.Done():
		return
	}
	for _, n := range nodes {
		// A control-plane restart in the meantime leaves the node unknown
		// until its next heartbeat re-registers it: look again, for up to
		// two more heartbeats.
		var st nodeStatus
		var code int
		var err error
		for deadline := time.Now().Add(2*in.cfg.HeartbeatInterval + 5*time.Second); ; {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, code, err = in.c.node(cctx, n.id)
			cancel()
			if (err == nil && code == http.StatusOK && st.Status == api.StatusOnline) || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		now := time.Now()
		switch {
		case err != nil || code != http.StatusOK:
			in.violate(rep, "%s (clock skewed): GET /v2/nodes/%s: %d %v", n.id, n.id, code, err)
			continue
		case st.Status != api.StatusOnline:
			in.violate(rep, "%s (clock skewed) is %s", n.id, st.Status)
		}
		for _, p := range st.Pools {
			at := p.SlotsObservedAt
			if at.After(now.Add(2*time.Second)) || at.Before(now.Add(-maxPollAge-2*time.Second)) {
				in.violate(rep, "%s (clock skewed): a pool's slots_observed_at %s is not within the last minute of %s",
					n.id, at.Format(time.RFC3339), now.Format(time.RFC3339))
			}
		}
	}
}

// badHeartbeats sends count malformed heartbeats for healthy nodes.
func (in *injector) badHeartbeats(ctx context.Context, count int, rep *FaultReport) {
	nodes := in.healthy()
	if len(nodes) == 0 {
		in.violate(rep, "no healthy node to send bad heartbeats for")
		return
	}
	big := `{"timestamp":"2026-01-01T00:00:00Z","pools":[{"pool_id":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}]}`
	garbage := make([]byte, 4096)
	_, _ = rand.Read(garbage)
	bodies := []struct {
		kind string
		body []byte
		want []int
	}{
		{"truncated", []byte(`{"timestamp":"2026-01-01T00:00:00Z","pools":[{"pool_id":"pool-0","ready":tr`), []int{400}},
		{"oversized", []byte(big), []int{413}},
		{"garbage", garbage, []int{400}},
		{"wrong-types", []byte(`{"timestamp":7,"pools":"pool-0","gpus":{"a":1}}`), []int{400}},
	}
	statuses := map[string]int{}
	for i := range count {
		b := bodies[i%len(bodies)]
		n := nodes[i%len(nodes)]
		code, err := in.rawPost(ctx, "/v2/nodes/"+url.PathEscape(n.id)+"/heartbeat", b.body)
		key := fmt.Sprintf("%s %d", b.kind, code)
		if err != nil {
			key = b.kind + " error"
		}
		statuses[key]++
		if err != nil || !slices.Contains(b.want, code) {
			in.violate(rep, "a %s heartbeat for %s got %d %v, want %v", b.kind, n.id, code, err, b.want)
		}
	}
	in.mu.Lock()
	rep.Statuses = statuses
	in.mu.Unlock()
}

func (in *injector) healthy() []*vnode {
	var out []*vnode
	for _, v := range in.f.nodes {
		v.mu.Lock()
		ok := !v.faulted && v.mode == nodeUp
		v.mu.Unlock()
		if ok {
			out = append(out, v)
		}
	}
	return out
}

func (in *injector) rawPost(ctx context.Context, path string, body []byte) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, in.c.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if in.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+in.c.token)
	}
	resp, err := in.c.http.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// registerFlood sends count registrations at once: a tenth of them for
// fresh ids, each id ten times, the rest by live nodes registering again.
func (in *injector) registerFlood(ctx context.Context, count int, rep *FaultReport) {
	fresh := max(count/10, 1)
	var freshIDs []string
	for k := range fresh {
		freshIDs = append(freshIDs, fmt.Sprintf("%sdup-%d", in.cfg.NodePrefix, k))
	}
	statuses := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for i := range fresh * 10 {
		id := freshIDs[i%fresh]
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			body, _ := json.Marshal(api.RegisterRequest{NodeID: id, Address: fmt.Sprintf("%s/dup/%d", in.f.base, i),
				Pools: []string{"pool-0"}, Version: "loadtest-flood"})
			code, err := in.rawPost(ctx, "/v2/nodes/register", body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses["fresh error"]++
				return
			}
			statuses[fmt.Sprintf("fresh %d", code)]++
		})
	}
	live := in.healthy()
	for i := 0; i < count-fresh*10 && i < len(live); i++ {
		in.f.sched.reregister(live[i])
		statuses["live re-registered"]++
	}
	wg.Wait()
	if statuses[fmt.Sprintf("fresh %d", http.StatusOK)] != fresh*10 {
		in.violate(rep, "fresh registrations answered %v, want %d × 200", statuses, fresh*10)
	}
	for _, id := range freshIDs {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, code, err := in.c.node(cctx, id)
		if err != nil || code != http.StatusOK {
			in.violate(rep, "%s registered ten times, then GET /v2/nodes/%s: %d %v", id, id, code, err)
		}
		req, _ := http.NewRequestWithContext(cctx, http.MethodDelete, in.c.url+"/v2/nodes/"+id, nil)
		if in.c.token != "" {
			req.Header.Set("Authorization", "Bearer "+in.c.token)
		}
		if resp, err := in.c.http.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				in.violate(rep, "DELETE /v2/nodes/%s after the flood: %d", id, resp.StatusCode)
			}
		}
		cancel()
	}
	in.mu.Lock()
	rep.Statuses = statuses
	in.mu.Unlock()
}

// restart stops and starts the control plane, then measures how soon the
// nodes that stayed up registered with the new one.
func (in *injector) restart(ctx context.Context, f Fault, rep *FaultReport) {
	kill := f.Kind == KillControlPlane
	stop := time.Now()
	err := in.cp.Restart(ctx, kill, f.Arg)
	up := time.Now()
	in.mu.Lock()
	in.restarts = append(in.restarts, restartWindow{kill: kill, stop: stop, up: up})
	in.mu.Unlock()
	if err != nil {
		in.violate(rep, "restart: %v", err)
		return
	}
	in.s.event("%s: the control plane answers again after %v", f, up.Sub(stop).Round(time.Millisecond))
	interval := min(in.cfg.HeartbeatInterval, in.nodeTimeout/3)
	limit := time.Duration(float64(interval)*(1+in.cfg.HeartbeatJitter)) + time.Second
	select {
	case <-time.After(limit + time.Second):
	case <-ctx.Done():
		return
	}
	rr := &RestartReport{Kill: kill, DownMS: msOf(up.Sub(stop)), LimitMS: msOf(limit)}
	var back []float64
	for _, n := range in.f.nodes {
		n.mu.Lock()
		steady := n.mode == nodeUp && !n.faulted
		n.mu.Unlock()
		if !steady {
			continue
		}
		rr.Nodes++
		at := int64(-1)
		for _, a := range n.history() {
			if a.register && a.ok && a.done > stop.UnixNano() {
				at = a.done
				break
			}
		}
		d := time.Duration(at - up.UnixNano())
		if at < 0 || d > limit {
			rr.Late = append(rr.Late, n.id)
			continue
		}
		rr.Back++
		back = append(back, msOf(max(d, 0)))
	}
	slices.Sort(back)
	if len(back) > 0 {
		rr.BackP50MS, rr.BackP99MS, rr.BackMaxMS = back[(len(back)-1)/2], back[(len(back)*99-1)/100], back[len(back)-1]
	}
	if len(rr.Late) > 0 {
		in.violate(rep, "%d of %d nodes not registered with the new control plane within %v: %s", len(rr.Late), rr.Nodes, limit,
			strings.Join(abbrev(rr.Late, 10), " "))
		rr.Late = abbrev(rr.Late, 50)
	}
	in.mu.Lock()
	rep.Restart = rr
	in.mu.Unlock()
}

// slowReaders opens streams it never reads and records the control
// plane's memory before, during and after.
func (in *injector) slowReaders(ctx context.Context, f Fault, rep *FaultReport) {
	mem := &MemoryReport{Streams: f.Count, BoundBytes: float64(16<<20 + f.Count*(1<<20))}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	mem.Before, _ = in.c.resources(rctx, in.cp, true)
	cancel()
	host := strings.TrimPrefix(strings.TrimPrefix(in.c.url, "http://"), "https://")
	var conns []net.Conn
	for i := range f.Count {
		c, err := in.openUnread(ctx, host, i)
		if err != nil {
			in.violate(rep, "slow reader %d: %v", i, err)
			continue
		}
		conns = append(conns, c)
	}
	mem.Opened = len(conns)
	peak := func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if r, err := in.c.resources(cctx, in.cp, true); err == nil && r.HeapInuse >= mem.Peak.HeapInuse {
			mem.Peak = r
		}
	}
	hold := f.Arg
	end := time.Now().Add(hold)
	for time.Now().Before(end) && ctx.Err() == nil {
		select {
		case <-time.After(min(2*time.Second, time.Until(end))):
		case <-ctx.Done():
		}
		peak()
	}
	for _, c := range conns {
		c.Close()
	}
	in.mu.Lock()
	rep.EndS = since(in.t0)
	in.mu.Unlock()
	in.s.event("%s: %d streams closed", f, len(conns))
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}
	rctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	mem.After, _ = in.c.resources(rctx, in.cp, true)
	cancel()
	if mem.Opened > 0 {
		mem.HeapGrowthPerStream = (mem.Peak.HeapInuse - mem.Before.HeapInuse) / float64(mem.Opened)
	}
	if g := mem.Peak.HeapInuse - mem.Before.HeapInuse; g > mem.BoundBytes {
		in.violate(rep, "%d unread streams grew the control plane's heap %s (bound %s)", mem.Opened, mib(uint64(g)), mib(uint64(mem.BoundBytes)))
	}
	in.mu.Lock()
	rep.Memory = mem
	in.mu.Unlock()
}

// slowTokens is what a slow reader asks for: a stream far longer than
// any socket buffer.
const slowTokens = 60000

// openUnread opens one stream and never reads it: an OpenAI stream (even
// i) or a v2 task's events (odd i), on a raw connection with a small
// receive buffer, so the control plane soon meets a full socket.
func (in *injector) openUnread(ctx context.Context, host string, i int) (net.Conn, error) {
	var path string
	var body []byte
	if i%2 == 0 {
		path = "/v1/chat/completions"
		body = fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":"a slow reader %d"}],"max_tokens":%d,"stream":true}`,
			in.cfg.Model, i, slowTokens)
	} else {
		id := fmt.Sprintf("%sslow-%x-%d", in.cfg.NodePrefix, time.Now().UnixNano()&0xffffff, i)
		b, _ := json.Marshal(api.TaskRequest{TaskID: id, Prompt: fmt.Sprintf("a slow reader %d", i), MaxTokens: slowTokens, ModelRef: in.cfg.Model})
		code, err := in.rawPost(ctx, "/v2/tasks", b)
		if err != nil {
			return nil, fmt.Errorf("POST /v2/tasks: %w", err)
		}
		if code != http.StatusAccepted {
			return nil, fmt.Errorf("POST /v2/tasks: status %d, want 202", code)
		}
		path = "/v2/tasks/" + id + "/events"
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	var req bytes.Buffer
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, host)
	if in.c.token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", in.c.token)
	}
	if body != nil {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := c.Write(req.Bytes()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
