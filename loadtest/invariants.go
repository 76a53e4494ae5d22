package loadtest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Invariant is one property checked after the run.
type Invariant struct {
	Name       string   `json:"name"`
	Checked    bool     `json:"checked"` // false: the run could not check it (said why in Detail)
	Violations int      `json:"violations"`
	Detail     string   `json:"detail"`
	Examples   []string `json:"examples,omitempty"`
}

// OK reports whether the invariant held (or was not checked).
func (i Invariant) OK() bool { return i.Violations == 0 }

const maxExamples = 10

func (i *Invariant) add(format string, args ...any) {
	i.Violations++
	if len(i.Examples) < maxExamples {
		i.Examples = append(i.Examples, fmt.Sprintf(format, args...))
	}
}

// placementSlack is how long after the harness saw a node offline or
// draining a new request may still reach it: the dispatcher rebuilds its
// fleet snapshot at most every 100 ms, and a loaded 2-core machine
// schedules late.
const placementSlack = time.Second

// livenessSlack is the margin of the "heartbeating node offline" check
// over the timeout: the harness's clock reads are its own.
const livenessSlack = 100 * time.Millisecond

// checkTasks: every admitted request ended with end or error, exactly
// once, and its stream closed (none hung, lost, doubled or left open).
// Requests lost across a control-plane kill are counted apart.
func checkTasks(reqs []request, restarts []restartWindow) Invariant {
	inv := Invariant{Name: "every admitted task ended once with end or error", Checked: true}
	n := map[Outcome]int{}
	for i := range reqs {
		r := &reqs[i]
		if r.outcome == Lost {
			for _, w := range restarts {
				if w.kill && r.sent.Before(w.stop) && !r.end.Before(w.stop) {
					r.outcome = Cut
				}
			}
		}
		n[r.outcome]++
		switch r.outcome {
		case Lost, Hung, Double, Unclosed:
			inv.add("%s %s request sent at %s: %s (tokens %d, terminal events %d) %s", r.outcome, r.api,
				r.sent.Format("15:04:05.000"), r.code, r.tokens, r.terminals, r.err)
		}
	}
	admitted := 0
	for i := range reqs {
		if reqs[i].admitted {
			admitted++
		}
	}
	inv.Detail = fmt.Sprintf("%d admitted: %d lost, %d hung, %d ended twice, %d left open after their end; %d cut by a control-plane kill",
		admitted, n[Lost], n[Hung], n[Double], n[Unclosed], n[Cut])
	return inv
}

// nodeCalls indexes each node's calls to the control plane by send time.
type nodeCalls [][]attempt

func callsOf(f *fleet) nodeCalls {
	out := make(nodeCalls, len(f.nodes))
	for i, n := range f.nodes {
		h := n.history()
		slices.SortFunc(h, func(a, b attempt) int { return int(a.sent - b.sent) })
		out[i] = h
	}
	return out
}

// anyCall reports whether node i made a call sent before to that may
// have been handled after from (done after it).
func (c nodeCalls) anyCall(i int, from, to int64) bool {
	for _, a := range c[i] {
		if a.sent >= to {
			return false
		}
		if a.done > from {
			return true
		}
	}
	return false
}

// checkPlacement: no request reached a pool whose node the control plane
// listed offline (a poll saw it, and no heartbeat could have brought it
// back since), nor one of a node whose draining heartbeat it had
// answered, more than placementSlack earlier.
func checkPlacement(f *fleet, calls nodeCalls, obs []observation, polled bool) Invariant {
	inv := Invariant{Name: "no task placed on an offline or draining node", Checked: true}
	arrivals := f.arrivalLog()
	offline := make(map[int][]observation)
	for _, o := range obs {
		if o.status == "offline" {
			offline[o.node] = append(offline[o.node], o)
		}
	}
	for _, os := range offline {
		sort.Slice(os, func(i, j int) bool { return os[i].recv < os[j].recv })
	}
	slack := placementSlack.Nanoseconds()
	for _, a := range arrivals {
		node := int(a.node)
		// Offline: the last poll that saw it offline, slack before.
		if os := offline[node]; len(os) > 0 {
			k := sort.Search(len(os), func(i int) bool { return os[i].recv >= a.at-slack }) - 1
			if k >= 0 && !calls.anyCall(node, os[k].sent, a.at) {
				inv.add("%s/pool-%d got a request at %s, %v after a poll listed it offline", f.nodes[node].id, a.pool,
					time.Unix(0, a.at).Format("15:04:05.000"), time.Duration(a.at-os[k].recv).Round(time.Millisecond))
			}
		}
		// Draining: its last answered call before then said draining, and
		// no later call was sent.
		var last *attempt
		for i := range calls[node] {
			c := &calls[node][i]
			if c.sent >= a.at {
				break
			}
			if c.ok && c.done <= a.at-slack && (last == nil || c.done > last.done) {
				last = c
			}
		}
		if last != nil && last.draining && !calls.anyCall(node, last.done, a.at) {
			inv.add("%s/pool-%d got a request at %s, %v after the control plane answered its draining heartbeat", f.nodes[node].id, a.pool,
				time.Unix(0, a.at).Format("15:04:05.000"), time.Duration(a.at-last.done).Round(time.Millisecond))
		}
	}
	inv.Detail = fmt.Sprintf("%d requests reached the virtual engines", len(arrivals))
	if !polled {
		inv.Detail += "; offline nodes not checked: --poll-interval 0"
	}
	return inv
}

// checkLiveness: no node the harness kept heartbeating was listed
// offline: a poll that saw it offline came less than the timeout after a
// heartbeat the control plane had answered before the poll.
func checkLiveness(f *fleet, calls nodeCalls, obs []observation, timeout time.Duration, polled bool) Invariant {
	inv := Invariant{Name: "no heartbeating node marked offline", Checked: polled}
	if !polled {
		inv.Detail = "not checked: --poll-interval 0"
		return inv
	}
	seen := 0
	for _, o := range obs {
		if o.status != "offline" {
			continue
		}
		seen++
		for _, a := range calls[o.node] {
			if a.sent >= o.sent {
				break
			}
			if a.ok && a.done < o.sent && a.sent > o.recv-timeout.Nanoseconds()+livenessSlack.Nanoseconds() {
				inv.add("%s listed offline by a poll at %s, %v after a heartbeat sent at %s and answered before the poll",
					f.nodes[o.node].id, time.Unix(0, o.sent).Format("15:04:05.000"), time.Duration(o.recv-a.sent).Round(time.Millisecond),
					time.Unix(0, a.sent).Format("15:04:05.000"))
				break
			}
		}
	}
	inv.Detail = fmt.Sprintf("%d offline sightings of harness nodes, timeout %v", seen, timeout)
	return inv
}

// checkRestarts: after each control-plane restart every node that stayed
// up registered again within one heartbeat interval.
func checkRestarts(reports []*FaultReport) Invariant {
	inv := Invariant{Name: "every node back within one heartbeat interval of a control-plane restart", Checked: true}
	var parts []string
	for _, r := range reports {
		if r.Restart == nil {
			continue
		}
		rr := r.Restart
		parts = append(parts, fmt.Sprintf("%s: down %.0f ms, %d/%d back, max %.0f ms (limit %.0f ms)", r.Fault, rr.DownMS, rr.Back, rr.Nodes, rr.BackMaxMS, rr.LimitMS))
		for _, id := range rr.Late {
			inv.add("%s: %s was not back within %.0f ms", r.Fault, id, rr.LimitMS)
		}
	}
	if len(parts) == 0 {
		inv.Checked, inv.Detail = false, "no control-plane restart in the schedule"
		return inv
	}
	inv.Detail = strings.Join(parts, "; ")
	return inv
}

// Tolerances of the resource check: what may legitimately remain after
// the load, over the baseline (see docs/configuration.md#llorch-loadtest).
const (
	// goroutineSlack and fdSlack: the heartbeat connections the fleet
	// holds open come and go (each is a goroutine and an fd in the control
	// plane), and a scrape round in flight holds up to 32 connections.
	goroutineSlack = 40
	fdSlack        = 40
	// heapSlack and heapPerTask: a finished v2 task stays readable for 5
	// minutes, its events in memory; everything else should be gone.
	heapSlack   = 8 << 20
	heapPerTask = 8 << 10
)

// resourceBounds is what final may be, given the baseline and the v2
// tasks the control plane may still hold.
func resourceBounds(base Resources, retainedTasks int) Resources {
	return Resources{
		Goroutines: base.Goroutines*1.1 + goroutineSlack,
		OpenFDs:    base.OpenFDs*1.1 + fdSlack,
		HeapInuse:  base.HeapInuse*1.25 + heapSlack + float64(retainedTasks)*heapPerTask,
	}
}

func within(r, bound Resources) bool {
	return r.Goroutines <= bound.Goroutines && r.OpenFDs <= bound.OpenFDs && r.HeapInuse <= bound.HeapInuse
}

func checkResources(base, final, bound Resources, ok bool) Invariant {
	inv := Invariant{Name: "goroutines, open fds and heap back to the baseline", Checked: ok}
	if !ok {
		inv.Detail = "not checked: the control plane's /metrics did not answer"
		return inv
	}
	inv.Detail = fmt.Sprintf("goroutines %.0f → %.0f (≤ %.0f), open fds %.0f → %.0f (≤ %.0f), heap in use %s → %s (≤ %s)",
		base.Goroutines, final.Goroutines, bound.Goroutines, base.OpenFDs, final.OpenFDs, bound.OpenFDs,
		mib(uint64(base.HeapInuse)), mib(uint64(final.HeapInuse)), mib(uint64(bound.HeapInuse)))
	if final.Goroutines > bound.Goroutines {
		inv.add("goroutines %.0f, baseline %.0f, bound %.0f", final.Goroutines, base.Goroutines, bound.Goroutines)
	}
	if final.OpenFDs > bound.OpenFDs {
		inv.add("open fds %.0f, baseline %.0f, bound %.0f", final.OpenFDs, base.OpenFDs, bound.OpenFDs)
	}
	if final.HeapInuse > bound.HeapInuse {
		inv.add("heap in use %s, baseline %s, bound %s", mib(uint64(final.HeapInuse)), mib(uint64(base.HeapInuse)), mib(uint64(bound.HeapInuse)))
	}
	return inv
}

// checkFaults gathers the faults' own checks (bad input refused, skewed
// nodes dated sanely, floods absorbed, memory bounded, offline detected in
// time).
func checkFaults(reports []*FaultReport) Invariant {
	inv := Invariant{Name: "each fault's own checks", Checked: len(reports) > 0}
	if len(reports) == 0 {
		inv.Detail = "no faults"
		return inv
	}
	errs := 0
	for _, r := range reports {
		if r.Error != "" {
			errs++
		}
		for _, v := range r.Violations {
			inv.add("%s: %s", r.Fault, v)
		}
	}
	inv.Detail = fmt.Sprintf("%d faults, %d not injected", len(reports), errs)
	return inv
}
