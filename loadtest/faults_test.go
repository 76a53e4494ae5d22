package loadtest

import (
	"strings"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	tests := []struct {
		in      string
		want    []Fault
		wantErr string
	}{
		{in: "", want: nil},
		{in: "10s:kill-node", want: []Fault{{At: 10 * time.Second, Kind: KillNode, Count: 1}}},
		{in: "20s:freeze-node=5:5s, 10s:kill-node=3", want: []Fault{
			{At: 10 * time.Second, Kind: KillNode, Count: 3},
			{At: 20 * time.Second, Kind: FreezeNode, Count: 5, Arg: 5 * time.Second},
		}},
		{in: "1m:slow-reader", want: []Fault{{At: time.Minute, Kind: SlowReader, Count: 10, Arg: 30 * time.Second}}},
		{in: "5s:clock-skew=2:-3h", want: []Fault{{At: 5 * time.Second, Kind: ClockSkew, Count: 2, Arg: -3 * time.Hour}}},
		{in: "30s:restart-control-plane:2s", want: []Fault{{At: 30 * time.Second, Kind: RestartControlPlane, Arg: 2 * time.Second}}},
		{in: "10s", wantErr: "want AT:KIND"},
		{in: "x:kill-node", wantErr: "time \"x\""},
		{in: "-1s:kill-node", wantErr: "time \"-1s\""},
		{in: "1s:explode", wantErr: "unknown fault \"explode\""},
		{in: "1s:kill-node=0", wantErr: "count of at least 1"},
		{in: "1s:kill-node=two", wantErr: "count of at least 1"},
		{in: "1s:restart-control-plane=2", wantErr: "takes no =N"},
		{in: "1s:bad-heartbeats=3:5s", wantErr: "takes no :ARG"},
		{in: "1s:freeze-node=1:-5s", wantErr: "positive duration"},
		{in: "1s:clock-skew=1", wantErr: "needs its skew"},
		{in: "1s:kill-node:1s:2s", wantErr: "want AT:KIND"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFaults(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFaults(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFaults(%q): %v", tt.in, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseFaults(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("fault %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// A schedule written by Fault.String reads back as itself, so the report's
// faults can be pasted into --faults.
func TestFaultStringRoundTrip(t *testing.T) {
	for _, k := range Kinds() {
		in := "90s:" + string(k)
		if k == ClockSkew {
			in += "=2:-90m"
		}
		fs, err := ParseFaults(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		again, err := ParseFaults(fs[0].String())
		if err != nil {
			t.Fatalf("%s written as %q: %v", in, fs[0], err)
		}
		if again[0] != fs[0] {
			t.Errorf("%s: %+v written as %q reads back as %+v", in, fs[0], fs[0].String(), again[0])
		}
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int
		ok     bool
	}{
		{"8", 8, 8, true}, {"8-64", 8, 64, true}, {" 2-2 ", 2, 2, true},
		{"0", 0, 0, false}, {"9-8", 0, 0, false}, {"a-b", 0, 0, false}, {"-3", 0, 0, false}, {"", 0, 0, false},
	}
	for _, tt := range tests {
		lo, hi, err := ParseRange(tt.in)
		if (err == nil) != tt.ok || lo != tt.lo || hi != tt.hi {
			t.Errorf("ParseRange(%q) = %d, %d, %v; want %d, %d, ok %v", tt.in, lo, hi, err, tt.lo, tt.hi, tt.ok)
		}
	}
}

func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{"10s:kill-node=3,20s:freeze-node=5:5s", "1s:clock-skew=1:+2h", "0s:restart-control-plane:1s", ":", "1s:=:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fs, err := ParseFaults(s)
		if err != nil {
			return
		}
		for i, fl := range fs {
			if _, ok := kinds[fl.Kind]; !ok {
				t.Fatalf("%q: unknown kind %q accepted", s, fl.Kind)
			}
			if fl.At < 0 || (kinds[fl.Kind].count && fl.Count < 1) {
				t.Fatalf("%q: fault %+v accepted", s, fl)
			}
			if i > 0 && fs[i-1].At > fl.At {
				t.Fatalf("%q: not sorted by time", s)
			}
			again, err := ParseFaults(fl.String())
			if err != nil || len(again) != 1 || again[0] != fl {
				t.Fatalf("%q: %+v written as %q reads back as %v, %v", s, fl, fl.String(), again, err)
			}
		}
	})
}
