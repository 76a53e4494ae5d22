package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cpClient makes the harness's own calls to the control plane (metrics,
// node lists, faults): apart from the fleet's and the load's.
type cpClient struct {
	url   string
	token string
	http  *http.Client
}

func (c *cpClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.http.Do(req)
}

// Resources are the control plane's own gauges (from its /metrics), and
// its RSS when the harness sees the process.
type Resources struct {
	Goroutines   float64 `json:"goroutines"`
	OpenFDs      float64 `json:"open_fds"`
	HeapInuse    float64 `json:"heap_inuse_bytes"`
	RSSBytes     uint64  `json:"rss_bytes,omitempty"`
	ForcedGC     bool    `json:"forced_gc"`
	NodeTimeoutS float64 `json:"-"`
}

// wanted are the series resources reads; /metrics of a large fleet is
// megabytes, so it is scanned line by line for these alone.
var wanted = map[string]func(*Resources, float64){
	"go_goroutines":                func(r *Resources, v float64) { r.Goroutines = v },
	"process_open_fds":             func(r *Resources, v float64) { r.OpenFDs = v },
	"go_memstats_heap_inuse_bytes": func(r *Resources, v float64) { r.HeapInuse = v },
	"llorch_node_timeout_seconds":  func(r *Resources, v float64) { r.NodeTimeoutS = v },
}

// resources reads the control plane's gauges; with gc and a pprof
// endpoint it forces a garbage collection first (GET heap?gc=1), so the
// heap read is what is live.
func (c *cpClient) resources(ctx context.Context, cp ControlPlane, gc bool) (Resources, error) {
	var r Resources
	if p := cp.PprofURL(); gc && p != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p+"heap?gc=1", nil)
		if err == nil {
			if resp, err := c.http.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.ForcedGC = resp.StatusCode == http.StatusOK
			}
		}
	}
	resp, err := c.get(ctx, "/metrics")
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if set := wanted[name]; set != nil {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				set(&r, v)
			}
		}
	}
	if u, ok := cp.Usage(); ok {
		r.RSSBytes = u.RSSBytes
	}
	return r, sc.Err()
}

// nodeStatus is one node in a poll of GET /v2/nodes?status=all.
type nodeStatus struct {
	NodeID        string    `json:"node_id"`
	Status        string    `json:"status"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Pools         []struct {
		SlotsObservedAt time.Time `json:"slots_observed_at"`
	} `json:"pools"`
}

// observation is one node seen offline or draining by a poll.
type observation struct {
	node       int
	status     string
	sent, recv int64 // unix ns: when the poll was sent and answered
}

// poller lists the fleet every interval and keeps what the invariants
// need: every harness node seen offline or draining, and the counts.
type poller struct {
	c        *cpClient
	byID     map[string]int
	interval time.Duration

	mu                     sync.Mutex
	seen                   []observation
	online, offline, drain int
	polls, failures        int
	lastCost               time.Duration
}

func newPoller(c *cpClient, f *fleet, interval time.Duration) *poller {
	p := &poller{c: c, interval: interval, byID: make(map[string]int, len(f.nodes)), online: -1, offline: -1, drain: -1}
	for _, n := range f.nodes {
		p.byID[n.id] = n.idx
	}
	return p
}

func (p *poller) run(ctx context.Context) {
	if p.interval <= 0 {
		return
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *poller) poll(ctx context.Context) {
	sent := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := p.c.get(cctx, "/v2/nodes?status=all")
	if err != nil {
		p.fail()
		return
	}
	defer resp.Body.Close()
	var list struct {
		Nodes []struct {
			NodeID string `json:"node_id"`
			Status string `json:"status"`
		} `json:"nodes"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&list) != nil {
		p.fail()
		return
	}
	recv := time.Now()
	on, off, dr := 0, 0, 0
	var seen []observation
	for _, n := range list.Nodes {
		idx, ours := p.byID[n.NodeID]
		if !ours {
			continue
		}
		switch n.Status {
		case "online":
			on++
		case "offline":
			off++
		case "draining":
			dr++
		}
		if n.Status == "offline" || n.Status == "draining" {
			seen = append(seen, observation{node: idx, status: n.Status, sent: sent.UnixNano(), recv: recv.UnixNano()})
		}
	}
	p.mu.Lock()
	p.seen = append(p.seen, seen...)
	p.online, p.offline, p.drain = on, off, dr
	p.polls++
	p.lastCost = recv.Sub(sent)
	p.mu.Unlock()
}

func (p *poller) fail() {
	p.mu.Lock()
	p.failures++
	p.mu.Unlock()
}

func (p *poller) counts() (online, offline, draining int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.online, p.offline, p.drain
}

func (p *poller) observations() []observation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]observation(nil), p.seen...)
}

// node reads one node (GET /v2/nodes/{id}): cheap at any fleet size.
func (c *cpClient) node(ctx context.Context, id string) (nodeStatus, int, error) {
	var n nodeStatus
	resp, err := c.get(ctx, "/v2/nodes/"+id)
	if err != nil {
		return n, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return n, resp.StatusCode, nil
	}
	err = json.NewDecoder(resp.Body).Decode(&n)
	return n, resp.StatusCode, err
}
