package scheduler_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/llorch/llorch/scheduler"
	"github.com/llorch/llorch/scheduler/schedtest"
)

func TestParseWeights(t *testing.T) {
	with := func(kv ...any) map[string]int64 {
		w := maps.Clone(scheduler.DefaultWeights)
		for i := 0; i < len(kv); i += 2 {
			w[kv[i].(string)] = int64(kv[i+1].(int))
		}
		return w
	}
	cases := []struct {
		in      string
		want    map[string]int64
		wantErr string
	}{
		{in: "", want: with()},
		{in: "  ", want: with()},
		{in: "expected-latency=5", want: with("expected-latency", 5)},
		{in: " gpu-utilization=0 , prefer=1000", want: with("gpu-utilization", 0, "prefer", 1000)},
		{in: "expected-latency=1,expected-latency=9", want: with("expected-latency", 9)},
		{in: "bogus=1", wantErr: `score weight "bogus": unknown scorer (known: expected-latency, free-vram, gpu-utilization, prefer, session-affinity)`},
		{in: "free-slots=3", wantErr: "unknown scorer"}, // replaced by expected-latency
		{in: "ready=1", wantErr: "unknown scorer"},
		{in: "prefer", wantErr: `score weight "prefer": want name=weight`},
		{in: "prefer=2,", wantErr: "want name=weight"},
		{in: "prefer=x", wantErr: "score weight prefer=x: want 0..1000"},
		{in: "prefer=1.5", wantErr: "want 0..1000"},
		{in: "prefer=-1", wantErr: "want 0..1000"},
		{in: "prefer=1001", wantErr: "want 0..1000"},
		{in: "prefer=", wantErr: "want 0..1000"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := scheduler.ParseWeights(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	// The defaults are copied, never changed.
	before := maps.Clone(scheduler.DefaultWeights)
	w, _ := scheduler.ParseWeights("")
	w[scheduler.ExpectedLatencyName] = 99
	if _, err := scheduler.ParseWeights("expected-latency=7"); err != nil || !maps.Equal(before, scheduler.DefaultWeights) {
		t.Errorf("DefaultWeights changed: %v (err %v)", scheduler.DefaultWeights, err)
	}
}

func TestNewDefault(t *testing.T) {
	names := func(fw *scheduler.Framework) (out []string) {
		for _, s := range fw.Scorers() {
			out = append(out, s.Plugin.Name())
		}
		return out
	}
	fw, err := scheduler.NewDefault(scheduler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"expected-latency", "gpu-utilization", "free-vram", "session-affinity", "prefer"}
	if got := names(fw); !slices.Equal(got, want) {
		t.Errorf("scorers %v, want %v", got, want)
	}
	for _, s := range fw.Scorers() {
		if s.Weight != scheduler.DefaultWeights[s.Plugin.Name()] {
			t.Errorf("%s weight %d, want %d", s.Plugin.Name(), s.Weight, scheduler.DefaultWeights[s.Plugin.Name()])
		}
	}

	// Weight 0 disables a scorer; the order stays fixed.
	w, err := scheduler.ParseWeights("gpu-utilization=0,prefer=0,expected-latency=10")
	if err != nil {
		t.Fatal(err)
	}
	fw, err = scheduler.NewDefault(scheduler.Options{Weights: w})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(fw); !slices.Equal(got, []string{"expected-latency", "free-vram", "session-affinity"}) {
		t.Errorf("scorers %v", got)
	}
	if fw.Scorers()[0].Weight != 10 {
		t.Errorf("expected-latency weight %d, want 10", fw.Scorers()[0].Weight)
	}

	// A full pool is ranked (a task may wait for it); nothing filters on
	// capacity.
	full := []scheduler.Candidate{schedtest.Pool("p").Slots(2, 2).InFlight(2).Obj()}
	d, err := fw.Schedule(now, &scheduler.Request{}, full, scheduler.Hints{})
	if err != nil || len(d.Ranked) != 1 || d.Ranked[0].Estimate.Wait <= 0 {
		t.Errorf("a full pool: %v, %+v; want it ranked with a wait", err, d)
	}
}
