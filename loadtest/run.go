package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Run runs one load test: it starts the control plane (when it owns it)
// and the virtual fleet, waits for every node to heartbeat, takes the
// control plane's baseline, offers the load with the faults, drains,
// lets resources settle and checks the invariants. An error means the
// test could not run; a control plane that fails it shows in
// Report.Violations.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now(), Setup: setupOf(&cfg)}
	cp := cfg.ControlPlane
	url, err := cp.Start(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = cp.Stop() }()
	c := &cpClient{url: url, token: cfg.Token, http: &http.Client{Timeout: time.Minute}}
	first, err := c.resources(ctx, cp, false)
	if err != nil {
		return nil, fmt.Errorf("the control plane's /metrics: %w", err)
	}
	if first.NodeTimeoutS <= 0 {
		return nil, errors.New("the control plane exports no llorch_node_timeout_seconds: is it in the cloud profile (--cloud-profile)?")
	}
	nodeTimeout := time.Duration(first.NodeTimeoutS * float64(time.Second))
	rep.Setup.NodeTimeoutS = first.NodeTimeoutS

	f, err := newFleet(&cfg)
	if err != nil {
		return nil, err
	}
	defer f.close()
	sched := newScheduler(f, cfg.Connections, cfg.Token, url)
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	var fleetDone sync.WaitGroup
	fleetDone.Go(func() { sched.run(fleetCtx, min(max(cfg.Nodes, 1), 256), cfg.Ramp) })
	defer func() {
		if !cp.CanRestart() {
			deregisterAll(f) // leave a shared control plane as it was
		}
		stopFleet()
		fleetDone.Wait()
	}()
	began := time.Now()
	if err := waitFleet(ctx, f, c, &cfg); err != nil {
		return nil, err
	}
	rep.Heartbeats.FleetReadyS = time.Since(began).Seconds()
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	baseline, err := c.resources(ctx, cp, true)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}

	// The load, its faults, and what watches them.
	t0 := time.Now()
	tr := newTraffic(&cfg, url)
	p := newPoller(c, f, cfg.PollInterval)
	s := &sampler{t0: t0, tr: tr, f: f, p: p, cp: cp, out: cfg.Progress, nodes: cfg.Nodes, phase: "load"}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watchers sync.WaitGroup
	watchers.Go(func() { s.run(watchCtx) })
	watchers.Go(func() { p.run(watchCtx) })
	in := &injector{cfg: &cfg, f: f, cp: cp, c: c, s: s, t0: t0, stale: cfg.StaleCheckInterval, nodeTimeout: nodeTimeout,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0xfa017))}
	faultCtx, stopFaults := context.WithCancel(context.WithoutCancel(ctx))
	var scheduling sync.WaitGroup
	scheduling.Go(func() { in.run(faultCtx) })

	trafficCtx, stopTraffic := context.WithDeadline(ctx, t0.Add(cfg.Duration+cfg.DrainTimeout))
	go func() {
		select {
		case <-time.After(cfg.Duration):
			s.setPhase("drain")
		case <-trafficCtx.Done():
		}
	}()
	if cfg.Rate > 0 {
		tr.run(trafficCtx, t0)
	} else {
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
		}
	}
	stopTraffic()
	s.setPhase("drain")
	scheduling.Wait()
	// Offline detections and restart measurements finish on their own
	// within the timeout and a heartbeat interval; then the faults are
	// lifted.
	grace := nodeTimeout + cfg.StaleCheckInterval + 2*cfg.HeartbeatInterval + 5*time.Second
	waited := make(chan struct{})
	go func() { in.wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(grace):
	case <-ctx.Done():
	}
	stopFaults()
	in.liftAll()
	in.wait()

	// Settle: close what the harness holds idle, then wait for the
	// control plane to come back within the bounds.
	s.setPhase("settle")
	tr.client.CloseIdleConnections()
	f.closeIdle()
	retained := 0
	for i := range tr.reqs {
		if tr.reqs[i].api == V2 && tr.reqs[i].admitted {
			retained++
		}
	}
	bound := resourceBounds(baseline, retained)
	settleStart := time.Now()
	var final Resources
	resOK := false
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := c.resources(rctx, cp, true)
		cancel()
		if err == nil {
			final, resOK = r, true
			if within(r, bound) {
				break
			}
		}
		if time.Since(settleStart) >= cfg.Settle || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	stopWatch()
	watchers.Wait()

	// The report.
	rep.Series = s.take()
	rep.Requests = summarize(tr.reqs, cfg.Duration)
	rep.Heartbeats.Sent, rep.Heartbeats.Failed = f.hbSent.Load(), f.hbFailed.Load()
	rep.Heartbeats.Registrations, rep.Heartbeats.RegistrationFailures = f.regSent.Load(), f.regFailed.Load()
	ctl := &rep.Control
	ctl.cpuOf(rep.Series)
	ctl.Baseline, ctl.Final, ctl.Bound = baseline, final, bound
	ctl.SettledS = time.Since(settleStart).Seconds()
	p.mu.Lock()
	ctl.Polls, ctl.PollFailures, ctl.PollMS = p.polls, p.failures, msOf(p.lastCost)
	p.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ctl.Healthy = waitHealthy(hctx, url, 5*time.Second, nil) == nil
	cancel()
	rep.Faults = in.reports

	calls := callsOf(f)
	obs := p.observations()
	polled := cfg.PollInterval > 0
	tasks := checkTasks(tr.reqs, in.restarts)
	rep.Requests = summarize(tr.reqs, cfg.Duration) // again: checkTasks marks the cut
	alive := Invariant{Name: "the control plane answers /health at the end", Checked: true, Detail: url}
	if !ctl.Healthy {
		alive.add("%s/health did not answer 200 after the run", url)
	}
	rep.Invariants = []Invariant{
		tasks,
		checkPlacement(f, calls, obs, polled),
		checkLiveness(f, calls, obs, nodeTimeout, polled),
		checkRestarts(rep.Faults),
		checkResources(baseline, final, bound, resOK),
		checkFaults(rep.Faults),
		alive,
	}
	for _, i := range rep.Invariants {
		rep.Violations += i.Violations
	}
	return rep, nil
}

// waitFleet waits until every virtual node registered and had a
// heartbeat answered, and the control plane lists them online.
func waitFleet(ctx context.Context, f *fleet, c *cpClient, cfg *Config) error {
	if len(f.nodes) == 0 {
		return nil
	}
	limit := cfg.Ramp + 2*cfg.HeartbeatInterval + time.Minute
	begin := time.Now()
	lastPrint := time.Time{}
	for {
		ready := 0
		for _, n := range f.nodes {
			n.mu.Lock()
			for _, a := range n.attempts {
				if a.ok && !a.register {
					ready++
					break
				}
			}
			n.mu.Unlock()
		}
		if cfg.Progress != nil && (time.Since(lastPrint) >= time.Second || ready == len(f.nodes)) {
			lastPrint = time.Now()
			fmt.Fprintf(cfg.Progress, "fleet: %d/%d nodes heartbeating (%.0fs; %d heartbeats failed, %d registrations failed)\n",
				ready, len(f.nodes), time.Since(begin).Seconds(), f.hbFailed.Load(), f.regFailed.Load())
		}
		if ready == len(f.nodes) {
			break
		}
		if time.Since(begin) > limit {
			return fmt.Errorf("only %d of %d virtual nodes heartbeating after %v (%d heartbeats and %d registrations failed)",
				ready, len(f.nodes), limit, f.hbFailed.Load(), f.regFailed.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The control plane's view.
	p := newPoller(c, f, 0)
	for {
		p.poll(ctx)
		on, _, _ := p.counts()
		if on == len(f.nodes) {
			return nil
		}
		if time.Since(begin) > limit {
			return fmt.Errorf("the control plane lists %d of the %d virtual nodes online", on, len(f.nodes))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// deregisterAll removes the virtual nodes from the control plane.
func deregisterAll(f *fleet) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, n := range f.nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			_ = n.client.Deregister(ctx, n.id)
		})
	}
	wg.Wait()
}

func setupOf(cfg *Config) Setup {
	s := Setup{Nodes: cfg.Nodes, PoolsPerNode: cfg.PoolsPerNode, GPUsPerNode: cfg.GPUsPerNode, Slots: cfg.Slots,
		TokensPerSecond: cfg.TokensPerSecond, HeartbeatIntervalS: cfg.HeartbeatInterval.Seconds(), HeartbeatJitter: cfg.HeartbeatJitter,
		Connections: cfg.Connections, StaleCheckS: cfg.StaleCheckInterval.Seconds(), Rate: cfg.Rate, DurationS: cfg.Duration.Seconds(),
		Mode: cfg.Mode, MaxTokens: [2]int{cfg.MaxTokens, cfg.MaxTokensMax}, PromptWords: [2]int{cfg.PromptWords, cfg.PromptWordsMax},
		Seed: cfg.Seed, PollIntervalS: cfg.PollInterval.Seconds(), CPUs: runtime.NumCPU()}
	for _, f := range cfg.Faults {
		s.Faults = append(s.Faults, f.String())
	}
	switch cp := cfg.ControlPlane.(type) {
	case *Process:
		s.ControlPlane = "started: " + strings.Join(append([]string{cp.Binary}, cp.Args...), " ")
	case External:
		s.ControlPlane = cp.URL
	default:
		s.ControlPlane = fmt.Sprintf("%T", cp)
	}
	return s
}
