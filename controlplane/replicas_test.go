package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/clocktest"
	"github.com/llorch/llorch/controlplane"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
	"github.com/llorch/llorch/registry"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/simengine"
)

// TestFleetsExpandReplicas: both fleets offer one candidate per ready
// replica of a pool, with the replica's id, URL, engine version and slot
// counts and the pool's other fields; a pool without replicas (an agent
// that predates them, or a pool not ready) stays one candidate.
func TestFleetsExpandReplicas(t *testing.T) {
	polled := time.Now().Add(-time.Second).Round(0)
	type want struct {
		key, url, version   string
		total, free, deferr int
		observed            bool
		gpus                int
	}
	check := func(t *testing.T, cands []scheduler.Candidate, wants []want) {
		t.Helper()
		var keys, wantKeys []string
		for _, c := range cands {
			keys = append(keys, c.Key())
		}
		for _, w := range wants {
			wantKeys = append(wantKeys, w.key)
		}
		if !slices.Equal(keys, wantKeys) {
			t.Fatalf("candidates %v, want %v", keys, wantKeys)
		}
		for i, w := range wants {
			c := cands[i]
			p := c.Pool
			if p.URL != w.url || p.EngineVersion != w.version || p.SlotsTotal != w.total || p.SlotsFree != w.free ||
				p.RequestsDeferred != w.deferr || p.SlotsObservedAt.IsZero() == w.observed || len(c.GPUs) != w.gpus {
				t.Errorf("%s: url %s version %s slots %d/%d deferred %d observed %v gpus %d; want %+v",
					w.key, p.URL, p.EngineVersion, p.SlotsFree, p.SlotsTotal, p.RequestsDeferred, p.SlotsObservedAt, len(c.GPUs), w)
			}
			if len(p.Replicas) != 0 {
				t.Errorf("%s: a candidate carries the pool's replica list", w.key)
			}
			if !slices.Equal(p.Models, []string{"tiny"}) && p.Ready {
				t.Errorf("%s: models %v, want the pool's", w.key, p.Models)
			}
		}
	}

	t.Run("registry", func(t *testing.T) {
		reg := registry.New(registry.Options{Timeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
		fleet := controlplane.RegistryFleet{Registry: reg}
		reg.Register(api.RegisterRequest{NodeID: "n1", Address: "http://10.0.0.1:9200"})
		gpus := []api.GPUState{{DeviceID: 0}, {DeviceID: 1}}
		now := time.Now()
		if err := reg.Heartbeat("n1", api.HeartbeatRequest{Timestamp: now, GPUs: gpus, Pools: []api.PoolState{
			{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 1, URL: "http://e:1", EngineVersion: "b1", DeviceMask: "1",
				Models: []string{"tiny"}, RequestsDeferred: 2, SlotsObservedAt: polled,
				Replicas: []api.ReplicaState{
					{ReplicaID: "r0", URL: "http://e:1", Ready: true, SlotsTotal: 2, SlotsFree: 0, EngineVersion: "b1", RequestsDeferred: 2, SlotsObservedAt: polled},
					{ReplicaID: "r1", URL: "http://e:2", Ready: true, SlotsTotal: 2, SlotsFree: 1, EngineVersion: "b2", SlotsObservedAt: polled},
					{ReplicaID: "r2", URL: "http://e:3", Ready: false, SlotsTotal: 2, SlotsFree: 2, EngineVersion: "b2"},
				}},
			{PoolID: "pool-1", Ready: true, SlotsTotal: 3, SlotsFree: 3, URL: "http://old:1", EngineVersion: "b0", Models: []string{"tiny"}},
			{PoolID: "pool-2", Models: []string{}},
		}}); err != nil {
			t.Fatal(err)
		}
		check(t, fleet.Candidates(), []want{
			{key: "n1/pool-0/r0", url: "http://e:1", version: "b1", total: 2, free: 0, deferr: 2, observed: true, gpus: 1},
			{key: "n1/pool-0/r1", url: "http://e:2", version: "b2", total: 2, free: 1, observed: true, gpus: 1},
			{key: "n1/pool-1", url: "http://old:1", version: "b0", total: 3, free: 3, gpus: 2},
			{key: "n1/pool-2", gpus: 2},
		})
	})

	t.Run("local", func(t *testing.T) {
		table := pool.NewTable([]string{"pool-1"})
		for i, r := range []string{"r0", "r1"} {
			table.Upsert("/run/pool-0_"+r+".json", handoff.Handoff{PoolID: "pool-0", ReplicaID: r, Engine: "llamacpp",
				EngineVersion: "b" + r, URL: "http://e:" + r, SlotsTotal: 2 + i, SlotsFree: 2 + i, Model: handoff.Model{ID: "tiny"}})
		}
		table.SetLoad("pool-0", "r1", pool.Load{Busy: 1, Deferred: 1, At: time.Now()})
		check(t, controlplane.LocalFleet{Pools: table}.Candidates(), []want{
			{key: "local/pool-0/r0", url: "http://e:r0", version: "br0", total: 2, free: 2},
			{key: "local/pool-0/r1", url: "http://e:r1", version: "br1", total: 3, free: 2, deferr: 1, observed: true},
			{key: "local/pool-1"},
		})
		// A replica's file goes: the other stays a candidate.
		table.Remove("/run/pool-0_r0.json")
		check(t, controlplane.LocalFleet{Pools: table}.Candidates(), []want{
			{key: "local/pool-0/r1", url: "http://e:r1", version: "br1", total: 3, free: 2, deferr: 1, observed: true},
			{key: "local/pool-1"},
		})
	})
}

// TestReplicasShareTheLoad: a pool with two replicas of two slots each
// (two engines) takes four concurrent streams, two on each engine; each
// replica is explained on its own; once one replica's file is removed,
// tasks go to the other.
func TestReplicasShareTheLoad(t *testing.T) {
	in := newInference(t, inferenceOpts{})
	engines := map[string]string{}
	for _, r := range []string{"r0", "r1"} {
		engines[r] = startSim(t, simengine.Config{Parallel: 2, TokensPerSecond: 20}).URL
		in.table.Upsert("/run/llorch/pool-0_"+r+".json", handoff.Handoff{
			PoolID: "pool-0", ReplicaID: r, Engine: "llamacpp", EngineVersion: "b0-test", URL: engines[r],
			SlotsTotal: 2, SlotsFree: 2, Model: handoff.Model{ID: "tiny"},
		})
	}
	in.d.Wake()
	c := testClient(t)

	// stream starts a long chat stream and returns once its first token
	// arrived, with the replica that serves it.
	stream := func() (replica string, stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		resp := streamReq(t, ctx, c, in.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":10000}`) //nolint:bodyclose // closed by the stop it returns
		rd := bufio.NewReader(resp.Body)
		for range 3 { // the role chunk and a token
			if _, err := rd.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
		if got := resp.Header.Get("X-Llorch-Pool"); got != "local/pool-0" {
			t.Errorf("X-Llorch-Pool = %q, want the pool's key", got)
		}
		return resp.Header.Get("X-Llorch-Replica"), func() { cancel(); resp.Body.Close() }
	}
	perReplica := map[string]int{}
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for range 4 {
		r, stop := stream()
		perReplica[r]++
		stops = append(stops, stop)
	}
	if perReplica["r0"] != 2 || perReplica["r1"] != 2 {
		t.Fatalf("streams per replica = %v, want 2 on each", perReplica)
	}
	for r, url := range engines {
		if n := slotsBusy(t, c, url); n != 2 {
			t.Errorf("replica %s's engine has %d busy slots, want 2", r, n)
		}
	}

	// Explain ranks each replica, with its own books.
	resp, err := c.Get(in.URL + "/v2/placement/explain?model=tiny")
	if err != nil {
		t.Fatal(err)
	}
	var ex api.Explanation
	err = json.NewDecoder(resp.Body).Decode(&ex)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	explainedReplicas := map[string]int{}
	for _, ec := range ex.Candidates {
		if ec.PoolID == "pool-0" {
			explainedReplicas[ec.ReplicaID] = ec.InFlight
		}
	}
	if len(explainedReplicas) != 2 || explainedReplicas["r0"] != 2 || explainedReplicas["r1"] != 2 {
		t.Errorf("explained replicas (in flight) = %v, want r0 and r1 with 2 each", explainedReplicas)
	}

	// r1 goes away; its streams end with it (the test stops them), and the
	// next tasks all go to r0.
	in.table.Remove("/run/llorch/pool-0_r1.json")
	in.d.Wake()
	for _, s := range stops {
		s()
	}
	stops = nil
	clocktest.WaitFor(t, 2*time.Second, "engines idle", func() bool {
		return slotsBusy(t, c, engines["r0"]) == 0 && slotsBusy(t, c, engines["r1"]) == 0
	})
	for range 2 {
		r, stop := stream()
		stops = append(stops, stop)
		if r != "r0" {
			t.Errorf("after r1's removal a task went to %q, want r0", r)
		}
	}
	if n := slotsBusy(t, c, engines["r1"]); n != 0 {
		t.Errorf("the removed replica's engine got %d tasks", n)
	}
}
