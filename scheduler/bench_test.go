package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

const benchGiB = 1 << 30

// fleet is nodes x pools candidates, varied the way a busy fleet is: slots,
// load, GPU use, free VRAM, speed and models differ, a few nodes are
// offline and a few pools draining; utilisation is fresh.
func fleet(nodes, pools int) []scheduler.Candidate {
	r := rand.New(rand.NewPCG(42, 7))
	out := make([]scheduler.Candidate, 0, nodes*pools)
	for n := range nodes {
		node := fmt.Sprintf("gpu-node-%04d.cluster.example.com", n)
		status := api.StatusOnline
		if r.IntN(100) == 0 {
			status = api.StatusOffline
		}
		for p := range pools {
			total := []int{2, 4, 8}[r.IntN(3)]
			model := "llama-8b"
			if r.IntN(4) == 0 {
				model = "qwen-7b"
			}
			w := schedtest.Pool(fmt.Sprintf("pool-%d", p)).Node(node).NodeStatus(status).
				Slots(total, r.IntN(total+1)).InFlight(r.IntN(3)).
				Models(model, "shared-embed").DeviceMask(fmt.Sprint(p)).
				GPUs(r.Float64()).
				FreeVRAM(141*benchGiB, uint64(r.IntN(141))*benchGiB).
				Util(schedtest.Util(now.Add(-time.Duration(r.IntN(5))*time.Second)).
					GPU(r.Float64()).VRAM(float64(r.IntN(141))*benchGiB).
					Queue(float64(r.IntN(3)), float64(r.IntN(total+1))).
					TokenRate(20 + 80*r.Float64()).Obj())
			if r.IntN(50) == 0 {
				w.Draining()
			}
			out = append(out, w.Obj())
		}
	}
	return out
}

func benchRequest() scheduler.Request {
	return scheduler.Request{
		TaskID: "t", SessionID: "s", Model: "llama-8b", PromptTokens: 200, MaxTokens: 128, Mode: "auto",
		AvoidPools: []string{"gpu-node-0007.cluster.example.com/pool-1", "pool-9"}, AllowFallback: true,
	}
}

// BenchmarkSchedule places one task on 1,000 nodes x 4 pools as the
// dispatcher does: a rotating sample of the feasible pools is scored.
func BenchmarkSchedule(b *testing.B) { benchSchedule(b, 1000, true) }

// BenchmarkScheduleExplain ranks all 4,000 pools, as
// GET /v2/placement/explain does.
func BenchmarkScheduleExplain(b *testing.B) { benchSchedule(b, 1000, false) }

// BenchmarkSchedule100 places one task on 100 nodes x 4 pools.
func BenchmarkSchedule100(b *testing.B) { benchSchedule(b, 100, true) }

func benchSchedule(b *testing.B, nodes int, sampled bool) {
	fw, err := scheduler.NewDefault(scheduler.Options{StaleAfter: staleAfter, Quarantine: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	if sampled {
		fw = fw.Sampled()
	}
	cands := fleet(nodes, 4)
	req := benchRequest()
	hints := scheduler.Hints{AffinityPool: "gpu-node-0003.cluster.example.com/pool-2", TaskTokens: 200}
	d, err := fw.Schedule(now, &req, cands, hints)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d candidates: %d ranked, %d rejected", len(cands), len(d.Ranked), len(d.Rejected))
	durs := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		d, err := fw.Schedule(now, &req, cands, hints)
		durs = append(durs, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		fw.Release(d)
	}
	slices.Sort(durs)
	pct := func(p float64) float64 {
		return float64(durs[int(p*float64(len(durs)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}

// BenchmarkFilter runs each filter plugin over a fleet's candidates; ns/op
// is per candidate.
func BenchmarkFilter(b *testing.B) {
	cands := fleet(250, 4)
	req := benchRequest()
	state := &scheduler.State{Now: now, StaleAfter: staleAfter}
	for _, f := range []scheduler.FilterPlugin{
		scheduler.Ready{}, scheduler.Model{}, scheduler.Placement{}, scheduler.DeviceMask{},
		scheduler.Quarantine{Window: 30 * time.Second},
	} {
		b.Run(f.Name(), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f.Filter(state, &req, &cands[i%len(cands)])
				i++
			}
		})
	}
}

// BenchmarkScore runs each score plugin over a fleet's candidates; ns/op
// is per candidate.
func BenchmarkScore(b *testing.B) {
	cands := fleet(250, 4)
	req := benchRequest()
	state := &scheduler.State{Now: now, StaleAfter: staleAfter, BestCost: time.Second, AffinityPool: "gpu-node-0003.cluster.example.com/pool-2"}
	for _, s := range []scheduler.ScorePlugin{
		scheduler.ExpectedLatency{}, scheduler.GPUUtilization{},
		scheduler.FreeVRAM{}, scheduler.SessionAffinity{}, scheduler.Prefer{},
	} {
		b.Run(s.Name(), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, _ = s.Score(state, &req, &cands[i%len(cands)])
				i++
			}
		})
	}
}
