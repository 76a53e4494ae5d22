package scheduler_test

import (
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

func TestFilters(t *testing.T) {
	p0 := func() *schedtest.CandidateWrapper { return schedtest.Pool("pool-0").Node("n1").Slots(4, 4).Models("m") }
	cases := []struct {
		name   string
		filter scheduler.FilterPlugin
		req    scheduler.Request
		cand   scheduler.Candidate
		want   string // reason; "" = fits
	}{
		// Ready.
		{"ready: online and ready", scheduler.Ready{}, scheduler.Request{}, p0().Obj(), ""},
		{"ready: offline node", scheduler.Ready{}, scheduler.Request{}, p0().NodeStatus(api.StatusOffline).Obj(), "node not online"},
		{"ready: draining node", scheduler.Ready{}, scheduler.Request{}, p0().NodeStatus(api.StatusDraining).Obj(), "node draining"},
		{"ready: draining pool", scheduler.Ready{}, scheduler.Request{}, p0().Draining().Obj(), "pool draining"},
		{"ready: pool not ready", scheduler.Ready{}, scheduler.Request{}, p0().NotReady().Obj(), "pool not ready"},

		// Model.
		{"model: served", scheduler.Model{}, scheduler.Request{Model: "m"}, p0().Models("x", "m").Obj(), ""},
		{"model: not served", scheduler.Model{}, scheduler.Request{Model: "m"}, p0().Models("x").Obj(), "model not served"},
		{"model: none served", scheduler.Model{}, scheduler.Request{Model: "m"}, p0().Models().Obj(), "model not served"},
		{"model: any", scheduler.Model{}, scheduler.Request{}, p0().Models().Obj(), ""},

		// Placement.
		{"placement: auto", scheduler.Placement{}, scheduler.Request{Mode: "auto"}, p0().Obj(), ""},
		{"placement: pin hit", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-0"}, p0().Obj(), ""},
		{"placement: pin miss", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-1"}, p0().Obj(), "not the pinned pool"},
		{"placement: pin miss despite fallback", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-1", AllowFallback: true}, p0().Obj(), "not the pinned pool"},
		{"placement: pin with node hit", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-0", NodeID: "n1"}, p0().Obj(), ""},
		{"placement: pin with other node", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-0", NodeID: "n2"}, p0().Obj(), "not the requested node"},
		{"placement: prefer hit", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"pool-1", "pool-0"}}, p0().Obj(), ""},
		{"placement: prefer hit by key", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"n1/pool-0"}}, p0().Obj(), ""},
		{"placement: prefer key of another node", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"n2/pool-0"}}, p0().Obj(), "not a preferred pool"},
		{"placement: prefer miss", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"pool-1"}}, p0().Obj(), "not a preferred pool"},
		{"placement: prefer miss with fallback", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"pool-1"}, AllowFallback: true}, p0().Obj(), ""},
		{"placement: prefer nothing", scheduler.Placement{}, scheduler.Request{Mode: "prefer"}, p0().Obj(), ""},
		{"placement: avoid pool id", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"pool-0"}}, p0().Obj(), "avoided by the task"},
		{"placement: avoid key", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"n1/pool-0"}}, p0().Obj(), "avoided by the task"},
		{"placement: avoid key of another node", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"n2/pool-0", "pool-1"}}, p0().Obj(), ""},
		{"placement: avoid beats pin", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-0", AvoidPools: []string{"pool-0"}}, p0().Obj(), "avoided by the task"},
		{"placement: avoid beats prefer", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"pool-0"}, AvoidPools: []string{"n1/pool-0"}}, p0().Obj(), "avoided by the task"},
		// A pool's replicas: pool id and pool key name every replica, a
		// replica key one; a pin pins the pool, any replica.
		{"placement: replica, avoid pool id", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"pool-0"}}, p0().Replica("r1").Obj(), "avoided by the task"},
		{"placement: replica, avoid pool key", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"n1/pool-0"}}, p0().Replica("r1").Obj(), "avoided by the task"},
		{"placement: replica, avoid its key", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"n1/pool-0/r1"}}, p0().Replica("r1").Obj(), "avoided by the task"},
		{"placement: replica, avoid another replica", scheduler.Placement{}, scheduler.Request{AvoidPools: []string{"n1/pool-0/r0"}}, p0().Replica("r1").Obj(), ""},
		{"placement: replica, pin its pool", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-0", NodeID: "n1"}, p0().Replica("r1").Obj(), ""},
		{"placement: replica, pin another pool", scheduler.Placement{}, scheduler.Request{Mode: "pin", PinPoolID: "pool-1"}, p0().Replica("r1").Obj(), "not the pinned pool"},
		{"placement: replica, prefer its pool key", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"n1/pool-0"}}, p0().Replica("r1").Obj(), ""},
		{"placement: replica, prefer its key", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"n1/pool-0/r1"}}, p0().Replica("r1").Obj(), ""},
		{"placement: replica, prefer another replica", scheduler.Placement{}, scheduler.Request{Mode: "prefer", PreferPools: []string{"n1/pool-0/r0"}}, p0().Replica("r1").Obj(), "not a preferred pool"},
		{"placement: node hit", scheduler.Placement{}, scheduler.Request{NodeID: "n1"}, p0().Obj(), ""},
		{"placement: node miss", scheduler.Placement{}, scheduler.Request{NodeID: "n2"}, p0().Obj(), "not the requested node"},
		// allow_fallback relaxes prefer mode only.
		{"placement: node miss, auto with fallback", scheduler.Placement{}, scheduler.Request{Mode: "auto", NodeID: "n2", AllowFallback: true}, p0().Obj(), "not the requested node"},
		{"placement: node miss, prefer", scheduler.Placement{}, scheduler.Request{Mode: "prefer", NodeID: "n2"}, p0().Obj(), "not the requested node"},
		{"placement: node miss, prefer with fallback", scheduler.Placement{}, scheduler.Request{Mode: "prefer", NodeID: "n2", AllowFallback: true}, p0().Obj(), ""},

		// DeviceMask.
		{"device mask: any", scheduler.DeviceMask{}, scheduler.Request{}, p0().DeviceMask("0,1").Obj(), ""},
		{"device mask: equal", scheduler.DeviceMask{}, scheduler.Request{DeviceMask: "1"}, p0().DeviceMask("1").Obj(), ""},
		{"device mask: differs", scheduler.DeviceMask{}, scheduler.Request{DeviceMask: "1"}, p0().DeviceMask("0,1").Obj(), "device mask differs"},
		{"device mask: pool on all GPUs", scheduler.DeviceMask{}, scheduler.Request{DeviceMask: "0"}, p0().Obj(), "device mask differs"},

		// Quarantine.
		{"quarantine: never failed", scheduler.Quarantine{Window: 30 * time.Second}, scheduler.Request{}, p0().Obj(), ""},
		{"quarantine: failed within window", scheduler.Quarantine{Window: 30 * time.Second}, scheduler.Request{},
			p0().Failed(now.Add(-10 * time.Second)).Obj(), "recent dispatch failure"},
		{"quarantine: failed as the window ends", scheduler.Quarantine{Window: 30 * time.Second}, scheduler.Request{},
			p0().Failed(now.Add(-30 * time.Second)).Obj(), ""},
		{"quarantine: failed long ago", scheduler.Quarantine{Window: 30 * time.Second}, scheduler.Request{},
			p0().Failed(now.Add(-time.Hour)).Obj(), ""},
		{"quarantine: no window", scheduler.Quarantine{}, scheduler.Request{}, p0().Failed(now).Obj(), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := filterOne(t, tc.filter, tc.req, tc.cand); got != tc.want {
				t.Errorf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFreeSlotsAndRoom(t *testing.T) {
	cases := []struct {
		total, inFlight, foreign, waiting int
		free                              int
		room, roomWithBacklog2            bool
	}{
		{4, 0, 0, 0, 4, true, true},
		{4, 3, 0, 0, 1, true, true},
		{4, 2, 1, 0, 1, true, true},  // another client's task
		{4, 2, 0, 1, 1, true, true},  // a task held here for the pool
		{4, 4, 0, 0, 0, false, true}, // full; the engine may queue two
		{4, 4, 1, 1, 0, false, false},
		{4, 9, 0, 0, 0, false, false}, // never negative
		{0, 0, 0, 0, 0, false, true},
	}
	for _, tc := range cases {
		c := schedtest.Pool("p").Slots(tc.total, tc.total).InFlight(tc.inFlight).Obj()
		c.Foreign, c.Waiting = tc.foreign, tc.waiting
		if got := c.FreeSlots(); got != tc.free {
			t.Errorf("%+v: FreeSlots %d, want %d", tc, got, tc.free)
		}
		if got := c.HasRoom(0); got != tc.room {
			t.Errorf("%+v: HasRoom(0) %v", tc, got)
		}
		if got := c.HasRoom(2); got != tc.roomWithBacklog2 {
			t.Errorf("%+v: HasRoom(2) %v", tc, got)
		}
	}
}
