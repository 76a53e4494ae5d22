package loadtest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind is a fault the harness can inject.
type Kind string

// The faults. Node faults pick Count virtual nodes (seeded) among those
// under no fault; For is how long the fault lasts (0: until the load and
// its drain end), except where said.
const (
	// KillNode: the node stops heartbeating and its engines and exporter
	// drop every connection, in flight or new (SIGKILL of an agent and its
	// engines). With For, it comes back after For as a fresh agent: new
	// engines, registration.
	KillNode Kind = "kill-node"
	// FreezeNode: heartbeats stop and every engine and exporter byte
	// stalls, connections stay open (SIGSTOP); after For everything
	// resumes, a heartbeat at once (SIGCONT).
	FreezeNode Kind = "freeze-node"
	// DrainNode: the node's heartbeats say draining (every pool
	// draining), as an agent shutting down does; after For it
	// deregisters and comes back undrained (a restarted agent).
	DrainNode Kind = "drain-node"
	// HangEngine: the node's engines accept generation requests and never
	// answer them (no status line) while the fault lasts.
	HangEngine Kind = "hang-engine"
	// ErrorEngine: the node's engines answer generation requests 500.
	ErrorEngine Kind = "error-engine"
	// StallEngine: the node's engine streams stop after their first chunk
	// (new and in flight) and send nothing more while the fault lasts.
	StallEngine Kind = "stall-engine"
	// SlowReader: Count clients open a stream (half OpenAI, half v2
	// events) and never read it, for For (default 30s); the control
	// plane's RSS and heap are recorded before, during and after.
	SlowReader Kind = "slow-reader"
	// BadHeartbeats: Count malformed heartbeats for live nodes, in turn
	// truncated JSON, a body over 1 MiB, binary garbage and wrong types;
	// each must be refused 400 or 413 and the node stay online.
	BadHeartbeats Kind = "bad-heartbeats"
	// ClockSkew: Count nodes date their heartbeats (and engine polls)
	// Arg off the true time, for the rest of the run; they must stay
	// online and their polls be dated sanely.
	ClockSkew Kind = "clock-skew"
	// RegisterFlood: Count registrations at once: a tenth of them fresh
	// node ids each registered ten times, the rest live nodes registering
	// again (as after a control-plane restart). Fresh ids are
	// deregistered afterwards.
	RegisterFlood Kind = "register-flood"
	// RestartControlPlane: SIGTERM (graceful drain), then start it again
	// Arg later; only a control plane the harness started.
	RestartControlPlane Kind = "restart-control-plane"
	// KillControlPlane: SIGKILL, then start it again Arg later.
	KillControlPlane Kind = "kill-control-plane"
)

// kindInfo says how a kind's fields are read.
type kindInfo struct {
	count    bool          // takes =N
	defCount int           // when =N is absent
	arg      string        // "for", "skew", "down" or "" (none)
	defArg   time.Duration // when :ARG is absent
}

var kinds = map[Kind]kindInfo{
	KillNode:            {count: true, defCount: 1, arg: "for"},
	FreezeNode:          {count: true, defCount: 1, arg: "for"},
	DrainNode:           {count: true, defCount: 1, arg: "for"},
	HangEngine:          {count: true, defCount: 1, arg: "for"},
	ErrorEngine:         {count: true, defCount: 1, arg: "for"},
	StallEngine:         {count: true, defCount: 1, arg: "for"},
	SlowReader:          {count: true, defCount: 10, arg: "for", defArg: 30 * time.Second},
	BadHeartbeats:       {count: true, defCount: 40},
	ClockSkew:           {count: true, defCount: 1, arg: "skew"},
	RegisterFlood:       {count: true, defCount: 100},
	RestartControlPlane: {arg: "down"},
	KillControlPlane:    {arg: "down"},
}

// Kinds lists the fault kinds, sorted.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Fault is one entry of a schedule.
type Fault struct {
	At    time.Duration // from the start of the load
	Kind  Kind
	Count int // nodes, streams, heartbeats or registrations
	// Arg is the fault's duration (For), its clock skew, or a control
	// plane's downtime, by kind.
	Arg time.Duration
}

// NodeFault reports whether the fault takes nodes out of the pool of
// healthy nodes while it lasts.
func (f Fault) NodeFault() bool {
	switch f.Kind {
	case KillNode, FreezeNode, DrainNode, HangEngine, ErrorEngine, StallEngine, ClockSkew:
		return true
	}
	return false
}

// ControlPlaneFault reports whether the fault restarts the control plane.
func (f Fault) ControlPlaneFault() bool {
	return f.Kind == RestartControlPlane || f.Kind == KillControlPlane
}

// String writes the fault in the schedule's syntax.
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(fmtDuration(f.At))
	b.WriteByte(':')
	b.WriteString(string(f.Kind))
	info := kinds[f.Kind]
	if info.count {
		b.WriteString("=" + strconv.Itoa(f.Count))
	}
	if f.Arg != 0 && info.arg != "" {
		b.WriteByte(':')
		if info.arg == "skew" && f.Arg > 0 {
			b.WriteByte('+')
		}
		b.WriteString(fmtDuration(f.Arg))
	}
	return b.String()
}

func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// ParseFaults reads a schedule: entries separated by commas, each
// AT:KIND[=N][:ARG], AT a Go duration from the start of the load.
// "10s:kill-node=3,20s:freeze-node=5:5s,30s:restart-control-plane".
// The result is sorted by AT.
func ParseFaults(s string) ([]Fault, error) {
	var out []Fault
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		f, err := parseFault(entry)
		if err != nil {
			return nil, fmt.Errorf("fault %q: %w", entry, err)
		}
		out = append(out, f)
	}
	slices.SortStableFunc(out, func(a, b Fault) int { return int(a.At - b.At) })
	return out, nil
}

func parseFault(entry string) (Fault, error) {
	parts := strings.Split(entry, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Fault{}, fmt.Errorf("want AT:KIND[=N][:ARG], e.g. 10s:kill-node=3")
	}
	at, err := time.ParseDuration(parts[0])
	if err != nil || at < 0 {
		return Fault{}, fmt.Errorf("time %q: want a duration from the start of the load, such as 10s", parts[0])
	}
	name, count, hasCount := strings.Cut(parts[1], "=")
	kind := Kind(name)
	info, ok := kinds[kind]
	if !ok {
		return Fault{}, fmt.Errorf("unknown fault %q (known: %s)", name, joinKinds())
	}
	f := Fault{At: at, Kind: kind, Count: info.defCount, Arg: info.defArg}
	switch {
	case hasCount && !info.count:
		return Fault{}, fmt.Errorf("%s takes no =N", kind)
	case hasCount:
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 {
			return Fault{}, fmt.Errorf("=%s: want a count of at least 1", count)
		}
		f.Count = n
	}
	if len(parts) == 3 {
		if info.arg == "" {
			return Fault{}, fmt.Errorf("%s takes no :ARG", kind)
		}
		d, err := time.ParseDuration(parts[2])
		if err != nil {
			return Fault{}, fmt.Errorf(":%s: want a duration (%s)", parts[2], info.arg)
		}
		if info.arg != "skew" && d < 0 {
			return Fault{}, fmt.Errorf(":%s: want a positive duration", parts[2])
		}
		f.Arg = d
	}
	if kind == ClockSkew && f.Arg == 0 {
		return Fault{}, fmt.Errorf("clock-skew needs its skew, e.g. clock-skew=2:+3h or clock-skew=2:-3h")
	}
	return f, nil
}

func joinKinds() string {
	var s []string
	for _, k := range Kinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}
