package pool_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/pool"
)

// ho builds a handoff for pool id with total/free slots.
func ho(poolID, url string, total, free int, model string) handoff.Handoff {
	return handoff.Handoff{
		PoolID:        poolID,
		Engine:        "llamacpp",
		EngineVersion: "b4747",
		URL:           url,
		SlotsTotal:    total,
		SlotsFree:     free,
		Model:         handoff.Model{ID: model},
	}
}

// notReady is a pool's snapshot before any handoff file announced it.
func notReady(id string, draining bool) api.PoolState {
	return api.PoolState{PoolID: id, Draining: draining, Models: []string{}}
}

// rep is one replica as a snapshot reports it, its engine not polled.
func rep(id, url string, total, free int) api.ReplicaState {
	return api.ReplicaState{ReplicaID: id, URL: url, Ready: true, SlotsTotal: total, SlotsFree: free, EngineVersion: "b4747"}
}

// polledRep is one replica whose engine was polled at at.
func polledRep(id, url string, total, free, deferred int, at time.Time) api.ReplicaState {
	r := rep(id, url, total, free)
	r.RequestsDeferred, r.SlotsObservedAt = deferred, at
	return r
}

func TestTableSnapshot(t *testing.T) {
	// polled dates the engine polls: after the handoff files below were
	// read, as a poll of their engines is.
	polled := time.Now().Add(time.Minute)
	const url0, url1 = "http://127.0.0.1:8081", "http://127.0.0.1:8082"
	ready := func(free, deferred int, at time.Time) api.PoolState {
		r := rep("r0", url0, 4, free)
		r.RequestsDeferred, r.SlotsObservedAt = deferred, at
		return api.PoolState{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: free, Engine: "llamacpp", EngineVersion: "b4747",
			URL: url0, Models: []string{"m"}, RequestsDeferred: deferred, SlotsObservedAt: at, Replicas: []api.ReplicaState{r}}
	}
	// twoReplicas is pool-0 with r0 (4 slots) and r1 (2 slots).
	twoReplicas := func(t *pool.Table) {
		t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
		t.Upsert("/rt/pool-0_r1.json", ho("pool-0", url1, 2, 2, "m"))
	}
	pool2 := func(free, deferred int, at time.Time, r0, r1 api.ReplicaState) api.PoolState {
		return api.PoolState{PoolID: "pool-0", Ready: true, SlotsTotal: 6, SlotsFree: free, Engine: "llamacpp", EngineVersion: "b4747",
			URL: url0, Models: []string{"m"}, RequestsDeferred: deferred, SlotsObservedAt: at, Replicas: []api.ReplicaState{r0, r1}}
	}
	tests := []struct {
		name     string
		declared []string
		do       func(t *pool.Table)
		want     []api.PoolState
	}{
		{
			name:     "declared pools start not ready with no slots",
			declared: []string{"pool-1", "pool-0"},
			do:       func(*pool.Table) {},
			want:     []api.PoolState{notReady("pool-0", false), notReady("pool-1", false)},
		},
		{
			name:     "no pools declared",
			declared: nil,
			do:       func(*pool.Table) {},
			want:     []api.PoolState{},
		},
		{
			name:     "one handoff makes its pool ready",
			declared: []string{"pool-0", "pool-1"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 3, "llama-3-8b"))
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 3, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"llama-3-8b"},
					Replicas: []api.ReplicaState{rep("r0", url0, 4, 3)}},
				notReady("pool-1", false),
			},
		},
		{
			name:     "two replicas of one pool: each listed; slots summed; identity from the first file; models deduplicated",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r1.json", ho("pool-0", url1, 2, 1, "llama-3-8b"))
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "llama-3-8b"))
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 6, SlotsFree: 5, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"llama-3-8b"},
					Replicas: []api.ReplicaState{rep("r0", url0, 4, 4), rep("r1", url1, 2, 1)}},
			},
		},
		{
			name:     "distinct models listed in file order; model name from path",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 1, 1, "b-model"))
				h := ho("pool-0", url1, 1, 1, "")
				h.Model.Path = "/models/a-model.gguf"
				t.Upsert("/rt/pool-0_r1.json", h)
				t.Upsert("/rt/pool-0_r2.json", ho("pool-0", "http://127.0.0.1:8083", 1, 1, "b-model"))
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 3, SlotsFree: 3, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"b-model", "a-model.gguf"},
					Replicas: []api.ReplicaState{rep("r0", url0, 1, 1), rep("r1", url1, 1, 1), rep("r2", "http://127.0.0.1:8083", 1, 1)}},
			},
		},
		{
			name:     "replica ids: replica_id, else the file name less the pool's prefix, else the file name; unique in the pool",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				h := ho("pool-0", url0, 1, 1, "m")
				h.ReplicaID = "gpu0"
				t.Upsert("/rt/a.json", h)
				t.Upsert("/rt/pool-0_gpu0.json", ho("pool-0", url1, 1, 1, "m"))      // gpu0 is taken
				t.Upsert("/rt/pool-0_x.json", ho("pool-0", "http://h:3", 1, 1, "m")) // x
				bad := ho("pool-0", "http://h:4", 1, 1, "m")
				bad.ReplicaID = "no/slash"
				t.Upsert("/rt/zz.json", bad) // not a valid id: the file's name
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 4, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("gpu0", url0, 1, 1), rep("pool-0_gpu0", url1, 1, 1), rep("x", "http://h:3", 1, 1), rep("zz", "http://h:4", 1, 1)}},
			},
		},
		{
			name:     "replacing a file replaces its replica",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:9999", 8, 2, "m"))
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 8, SlotsFree: 2, Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:9999", Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("r0", "http://127.0.0.1:9999", 8, 2)}},
			},
		},
		{
			name:     "remove makes the pool not ready",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.Remove("/rt/pool-0_r0.json")
			},
			want: []api.PoolState{notReady("pool-0", false)},
		},
		{
			name:     "removing one of two replicas keeps the other",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.Upsert("/rt/pool-0_r1.json", ho("pool-0", url1, 2, 0, "m"))
				t.Remove("/rt/pool-0_r0.json")
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 2, SlotsFree: 0, Engine: "llamacpp", EngineVersion: "b4747", URL: url1, Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("r1", url1, 2, 0)}},
			},
		},
		{
			name:     "removing an unknown file changes nothing",
			declared: []string{"pool-0"},
			do:       func(t *pool.Table) { t.Remove("/rt/nope.json") },
			want:     []api.PoolState{notReady("pool-0", false)},
		},
		{
			name:     "a file whose pool_id changes moves its replica",
			declared: []string{"pool-0", "pool-1"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/a.json", ho("pool-0", url0, 4, 4, "m"))
				t.Upsert("/rt/a.json", ho("pool-1", url0, 4, 4, "m"))
			},
			want: []api.PoolState{
				notReady("pool-0", false),
				{PoolID: "pool-1", Ready: true, SlotsTotal: 4, SlotsFree: 4, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("a", url0, 4, 4)}},
			},
		},
		{
			name:     "a handoff for an undeclared pool adds it",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/extra_r0.json", ho("extra", "http://127.0.0.1:8085", 1, 1, "m"))
			},
			want: []api.PoolState{
				{PoolID: "extra", Ready: true, SlotsTotal: 1, SlotsFree: 1, Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8085", Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("r0", "http://127.0.0.1:8085", 1, 1)}},
				notReady("pool-0", false),
			},
		},
		{
			name:     "drain marks one pool draining, it stays ready",
			declared: []string{"pool-0", "pool-1"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.Drain("pool-0")
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, Draining: true, SlotsTotal: 4, SlotsFree: 4, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("r0", url0, 4, 4)}},
				notReady("pool-1", false),
			},
		},
		{
			name:     "drain all marks every pool draining",
			declared: []string{"pool-0", "pool-1"},
			do:       func(t *pool.Table) { t.DrainAll() },
			want:     []api.PoolState{notReady("pool-0", true), notReady("pool-1", true)},
		},
		{
			name:     "draining survives a replaced handoff",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Drain("pool-0")
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, Draining: true, SlotsTotal: 4, SlotsFree: 4, Engine: "llamacpp", EngineVersion: "b4747", URL: url0, Models: []string{"m"},
					Replicas: []api.ReplicaState{rep("r0", url0, 4, 4)}},
			},
		},
		{
			name:     "an engine poll gives free slots, deferred requests and when it observed them",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: polled})
			},
			want: []api.PoolState{ready(1, 2, polled)},
		},
		{
			name:     "more busy than slots is no free slot",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 6, At: polled})
			},
			want: []api.PoolState{ready(0, 0, polled)},
		},
		{
			name:     "a failed poll falls back to the handoff file's counts, undated",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: polled})
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 1, Deferred: 5})
			},
			want: []api.PoolState{ready(4, 0, time.Time{})},
		},
		{
			name:     "a later poll replaces the earlier",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: polled})
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 1, At: polled.Add(time.Second)})
			},
			want: []api.PoolState{ready(3, 0, polled.Add(time.Second))},
		},
		{
			name:     "a pool that is not ready reports no poll",
			declared: []string{"pool-0"},
			do:       func(t *pool.Table) { t.SetLoad("pool-0", "r0", pool.Load{Busy: 1, Deferred: 1, At: polled}) },
			want:     []api.PoolState{notReady("pool-0", false)},
		},
		{
			name:     "a replica change forgets the poll of the engine before it",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: polled})
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
			},
			want: []api.PoolState{ready(4, 0, time.Time{})},
		},
		{
			name:     "a poll that began before the replica changed is ignored",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 2, At: time.Now().Add(-time.Second)})
			},
			want: []api.PoolState{ready(4, 0, time.Time{})},
		},
		{
			name:     "a poll of an unknown pool is ignored",
			declared: []string{"pool-0"},
			do:       func(t *pool.Table) { t.SetLoad("nope", "r0", pool.Load{Busy: 1, At: polled}) },
			want:     []api.PoolState{notReady("pool-0", false)},
		},
		{
			name:     "a poll of an unknown replica is ignored",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", url0, 4, 4, "m"))
				t.SetLoad("pool-0", "r9", pool.Load{Busy: 1, At: polled})
			},
			want: []api.PoolState{ready(4, 0, time.Time{})},
		},
		{
			name:     "two replicas polled: each its own load; the pool sums them, dated by the older poll",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				twoReplicas(t)
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 1, At: polled.Add(time.Second)})
				t.SetLoad("pool-0", "r1", pool.Load{Busy: 2, Deferred: 2, At: polled})
			},
			want: []api.PoolState{pool2(1, 3, polled,
				polledRep("r0", url0, 4, 1, 1, polled.Add(time.Second)), polledRep("r1", url1, 2, 0, 2, polled))},
		},
		{
			name:     "one of two replicas polled: the pool's free slots mix the poll and the other's file, undated",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				twoReplicas(t)
				t.SetLoad("pool-0", "r1", pool.Load{Busy: 1, Deferred: 4, At: polled})
			},
			want: []api.PoolState{pool2(5, 4, time.Time{}, rep("r0", url0, 4, 4), polledRep("r1", url1, 2, 1, 4, polled))},
		},
		{
			name:     "a replica's file replaced: its poll is forgotten, the other's kept",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				twoReplicas(t)
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 4, At: polled})
				t.SetLoad("pool-0", "r1", pool.Load{Busy: 2, At: polled})
				t.Upsert("/rt/pool-0_r1.json", ho("pool-0", url1, 2, 2, "m"))
			},
			want: []api.PoolState{pool2(2, 0, time.Time{}, polledRep("r0", url0, 4, 0, 0, polled), rep("r1", url1, 2, 2))},
		},
		{
			name:     "a replica removed: the other stays with its poll, and dates the pool",
			declared: []string{"pool-0"},
			do: func(t *pool.Table) {
				twoReplicas(t)
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 4, At: polled})
				t.SetLoad("pool-0", "r1", pool.Load{Busy: 1, At: polled})
				t.Remove("/rt/pool-0_r0.json")
			},
			want: []api.PoolState{
				{PoolID: "pool-0", Ready: true, SlotsTotal: 2, SlotsFree: 1, Engine: "llamacpp", EngineVersion: "b4747", URL: url1, Models: []string{"m"},
					SlotsObservedAt: polled, Replicas: []api.ReplicaState{polledRep("r1", url1, 2, 1, 0, polled)}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := pool.NewTable(tt.declared)
			tt.do(tab)
			got := tab.Snapshot()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Snapshot() =\n  %+v\nwant\n  %+v", got, tt.want)
			}
			// IDs agree with the snapshot and are sorted.
			var ids []string
			for _, s := range got {
				ids = append(ids, s.PoolID)
			}
			if gotIDs := tab.IDs(); !slices.Equal(gotIDs, ids) {
				t.Errorf("IDs() = %v, want %v", gotIDs, ids)
			}
		})
	}
}

func TestTableStatus(t *testing.T) {
	polled := time.Now().Add(time.Minute)
	tests := []struct {
		name   string
		do     func(t *pool.Table)
		pool   string
		want   api.PoolStatus
		wantOK bool
	}{
		{
			name:   "declared, no handoff",
			do:     func(*pool.Table) {},
			pool:   "pool-0",
			want:   api.PoolStatus{PoolID: "pool-0", Models: []string{}},
			wantOK: true,
		},
		{
			name:   "unknown pool",
			do:     func(*pool.Table) {},
			pool:   "nope",
			wantOK: false,
		},
		{
			name: "ready with last error",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 1, "m"))
				t.SetLastError("pool-0", "probe: connection refused")
			},
			pool: "pool-0",
			want: api.PoolStatus{
				PoolID: "pool-0", Live: true, Ready: true, SlotsTotal: 4, SlotsFree: 1,
				Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081",
				Models: []string{"m"}, LastError: "probe: connection refused",
				Replicas: []api.ReplicaState{rep("r0", "http://127.0.0.1:8081", 4, 1)},
			},
			wantOK: true,
		},
		{
			name: "last error kept after the replica goes away",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 1, "m"))
				t.SetLastError("pool-0", "engine exited: signal: killed")
				t.Remove("/rt/pool-0_r0.json")
			},
			pool:   "pool-0",
			want:   api.PoolStatus{PoolID: "pool-0", Models: []string{}, LastError: "engine exited: signal: killed"},
			wantOK: true,
		},
		{
			name: "free slots follow an engine poll",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 4, "m"))
				t.SetLoad("pool-0", "r0", pool.Load{Busy: 3, Deferred: 1, At: polled})
			},
			pool: "pool-0",
			want: api.PoolStatus{
				PoolID: "pool-0", Live: true, Ready: true, SlotsTotal: 4, SlotsFree: 1,
				Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081", Models: []string{"m"},
				Replicas: []api.ReplicaState{polledRep("r0", "http://127.0.0.1:8081", 4, 1, 1, polled)},
			},
			wantOK: true,
		},
		{
			name: "two replicas: each with its URL and slots",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 2, 2, "m"))
				t.Upsert("/rt/pool-0_r1.json", ho("pool-0", "http://127.0.0.1:8082", 2, 2, "m"))
				t.SetLoad("pool-0", "r1", pool.Load{Busy: 2, At: polled})
			},
			pool: "pool-0",
			want: api.PoolStatus{
				PoolID: "pool-0", Live: true, Ready: true, SlotsTotal: 4, SlotsFree: 2,
				Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081", Models: []string{"m"},
				Replicas: []api.ReplicaState{rep("r0", "http://127.0.0.1:8081", 2, 2), polledRep("r1", "http://127.0.0.1:8082", 2, 0, 0, polled)},
			},
			wantOK: true,
		},
		{
			name:   "draining",
			do:     func(t *pool.Table) { t.Drain("pool-0") },
			pool:   "pool-0",
			want:   api.PoolStatus{PoolID: "pool-0", Draining: true, Models: []string{}},
			wantOK: true,
		},
		{
			name: "draining, its engine still announced: not stopped yet",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 4, "m"))
				t.Drain("pool-0")
				t.MarkStopped("pool-0")
			},
			pool: "pool-0",
			want: api.PoolStatus{
				PoolID: "pool-0", Live: true, Ready: true, Draining: true, SlotsTotal: 4, SlotsFree: 4,
				Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081", Models: []string{"m"},
				Replicas: []api.ReplicaState{rep("r0", "http://127.0.0.1:8081", 4, 4)},
			},
			wantOK: true,
		},
		{
			name: "stopped: drained and its engine gone",
			do: func(t *pool.Table) {
				t.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 4, "m"))
				t.Drain("pool-0")
				t.Remove("/rt/pool-0_r0.json")
				t.MarkStopped("pool-0")
			},
			pool:   "pool-0",
			want:   api.PoolStatus{PoolID: "pool-0", Draining: true, Stopped: true, Models: []string{}},
			wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := pool.NewTable([]string{"pool-0"})
			tt.do(tab)
			got, ok := tab.Status(tt.pool)
			if ok != tt.wantOK {
				t.Fatalf("Status(%q) ok = %v, want %v", tt.pool, ok, tt.wantOK)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Status(%q) =\n  %+v\nwant\n  %+v", tt.pool, got, tt.want)
			}
		})
	}
}

func TestDrainReportsExistence(t *testing.T) {
	tab := pool.NewTable([]string{"pool-0"})
	if !tab.Drain("pool-0") {
		t.Error("Drain(pool-0) = false, want true")
	}
	if tab.Drain("nope") {
		t.Error("Drain(nope) = true, want false")
	}
	if _, ok := tab.Status("nope"); ok {
		t.Error("Drain of an unknown pool created it")
	}
	if tab.MarkStopped("nope") {
		t.Error("MarkStopped(nope) = true, want false")
	}
	if _, ok := tab.Status("nope"); ok {
		t.Error("MarkStopped of an unknown pool created it")
	}
}

func TestSnapshotReturnsCopies(t *testing.T) {
	tab := pool.NewTable([]string{"pool-0"})
	tab.Upsert("/rt/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:8081", 4, 4, "m"))
	s := tab.Snapshot()
	s[0].Models[0] = "mutated"
	s[0].SlotsFree = 0
	s[0].Replicas[0].URL = "mutated"
	if got := tab.Snapshot()[0]; got.Models[0] != "m" || got.SlotsFree != 4 || got.Replicas[0].URL != "http://127.0.0.1:8081" {
		t.Errorf("mutating a snapshot changed the table: %+v", got)
	}
}

// pending reports whether a change signal is waiting, consuming it.
func pending(tab *pool.Table) bool {
	select {
	case <-tab.Changes():
		return true
	default:
		return false
	}
}

func TestChanges(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *pool.Table)
		want bool
	}{
		{"nothing", func(*pool.Table) {}, false},
		{"upsert", func(t *pool.Table) { t.Upsert("/rt/a.json", ho("pool-0", "http://x:1", 1, 1, "m")) }, true},
		{"remove", func(t *pool.Table) { t.Remove("/rt/a.json") }, true},
		{"drain", func(t *pool.Table) { t.Drain("pool-0") }, true},
		{"drain unknown pool", func(t *pool.Table) { t.Drain("nope") }, false},
		{"drain all", func(t *pool.Table) { t.DrainAll() }, true},
		{"reads", func(t *pool.Table) { t.Snapshot(); t.IDs(); t.Status("pool-0") }, false},
		// Engine polls are frequent: they ride the next heartbeat.
		{"engine poll", func(t *pool.Table) { t.SetLoad("pool-0", "r0", pool.Load{Busy: 1, At: time.Now()}) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := pool.NewTable([]string{"pool-0"})
			tt.do(tab)
			if got := pending(tab); got != tt.want {
				t.Errorf("change signalled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestChangesCoalesceAndNeverBlock(t *testing.T) {
	tab := pool.NewTable([]string{"pool-0"})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Nobody reads Changes: every call must still return.
		for i := 0; i < 100; i++ {
			tab.Upsert("/rt/a.json", ho("pool-0", "http://x:1", 1, 1, "m"))
			tab.Drain("pool-0")
			tab.Remove("/rt/a.json")
			tab.DrainAll()
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("table mutations blocked with nobody reading Changes()")
	}
	if !pending(tab) {
		t.Fatal("no change signalled after 400 mutations")
	}
	if pending(tab) {
		t.Error("a second signal was pending: changes are not coalesced")
	}
	if got := cap(tab.Changes()); got != 1 {
		t.Errorf("cap(Changes()) = %d, want 1", got)
	}
}

// The version moves with every change a snapshot shows, and only then: a
// cached snapshot is rebuilt exactly when it would differ.
func TestVersionFollowsSnapshots(t *testing.T) {
	tb := pool.NewTable([]string{"pool-0"})
	steps := []struct {
		name   string
		change func()
		moves  bool
	}{
		{"a handoff file", func() { tb.Upsert("/run/pool-0_r0.json", ho("pool-0", "http://127.0.0.1:1", 4, 4, "m")) }, true},
		{"an engine poll", func() { tb.SetLoad("pool-0", "r0", pool.Load{Busy: 2, At: time.Now()}) }, true},
		{"a last error", func() { tb.SetLastError("pool-0", "boom") }, false},
		{"a drain", func() { tb.Drain("pool-0") }, true},
		{"a poll of an unknown pool", func() { tb.SetLoad("pool-9", "r0", pool.Load{Busy: 1, At: time.Now()}) }, false},
		{"a poll of an unknown replica", func() { tb.SetLoad("pool-0", "r7", pool.Load{Busy: 1, At: time.Now()}) }, false},
		{"a removed file", func() { tb.Remove("/run/pool-0_r0.json") }, true},
	}
	for _, st := range steps {
		before, snap := tb.Version(), tb.Snapshot()
		st.change()
		if moved := tb.Version() != before; moved != st.moves {
			t.Errorf("%s: version moved %v, want %v", st.name, moved, st.moves)
		}
		if !st.moves && !reflect.DeepEqual(snap, tb.Snapshot()) {
			t.Errorf("%s: the snapshot changed but the version did not", st.name)
		}
	}
}
