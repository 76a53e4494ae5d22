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
		{in: "free-slots=5", want: with("free-slots", 5)},
		{in: " token-rate=0 , prefer=1000", want: with("token-rate", 0, "prefer", 1000)},
		{in: "free-slots=1,free-slots=9", want: with("free-slots", 9)},
		{in: "bogus=1", wantErr: `score weight "bogus": unknown scorer (known: engine-queue, free-slots, free-vram, gpu-utilization, prefer, session-affinity, token-rate)`},
		{in: "ready=1", wantErr: "unknown scorer"},
		{in: "free-slots", wantErr: `score weight "free-slots": want name=weight`},
		{in: "free-slots=2,", wantErr: "want name=weight"},
		{in: "free-slots=x", wantErr: "score weight free-slots=x: want 0..1000"},
		{in: "free-slots=1.5", wantErr: "want 0..1000"},
		{in: "free-slots=-1", wantErr: "want 0..1000"},
		{in: "free-slots=1001", wantErr: "want 0..1000"},
		{in: "free-slots=", wantErr: "want 0..1000"},
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
	w[scheduler.FreeSlotsName] = 99
	if _, err := scheduler.ParseWeights("free-slots=7"); err != nil || !maps.Equal(before, scheduler.DefaultWeights) {
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
	want := []string{"free-slots", "engine-queue", "token-rate", "gpu-utilization", "free-vram", "session-affinity", "prefer"}
	if got := names(fw); !slices.Equal(got, want) {
		t.Errorf("scorers %v, want %v", got, want)
	}
	for _, s := range fw.Scorers() {
		if s.Weight != scheduler.DefaultWeights[s.Plugin.Name()] {
			t.Errorf("%s weight %d, want %d", s.Plugin.Name(), s.Weight, scheduler.DefaultWeights[s.Plugin.Name()])
		}
	}

	// Weight 0 disables a scorer; the order stays fixed.
	w, err := scheduler.ParseWeights("token-rate=0,prefer=0,free-slots=10")
	if err != nil {
		t.Fatal(err)
	}
	fw, err = scheduler.NewDefault(scheduler.Options{Weights: w})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(fw); !slices.Equal(got, []string{"free-slots", "engine-queue", "gpu-utilization", "free-vram", "session-affinity"}) {
		t.Errorf("scorers %v", got)
	}
	if fw.Scorers()[0].Weight != 10 {
		t.Errorf("free-slots weight %d, want 10", fw.Scorers()[0].Weight)
	}

	// RequireFreeSlot adds the capacity filter.
	full := []scheduler.Candidate{schedtest.Pool("p").Slots(2, 0).Obj()}
	d, err := fw.Schedule(now, &scheduler.Request{}, full, "")
	if err != nil || len(d.Ranked) != 1 {
		t.Errorf("without RequireFreeSlot a full pool is ranked: %v, %+v", err, d)
	}
	fw, err = scheduler.NewDefault(scheduler.Options{RequireFreeSlot: true})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = fw.Schedule(now, &scheduler.Request{}, full, "")
	if len(d.Rejected) != 1 || d.Rejected[0].Plugin != scheduler.CapacityName {
		t.Errorf("with RequireFreeSlot: rejected %+v, want by %s", d.Rejected, scheduler.CapacityName)
	}
}
