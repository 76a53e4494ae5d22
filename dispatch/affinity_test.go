package dispatch

import (
	"fmt"
	"testing"
	"time"
)

func TestAffinitiesAreBounded(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	a := newAffinities(time.Minute, 3)
	a.set("s1", "n/p1", at(0))
	a.set("s2", "n/p2", at(1))
	a.set("s3", "n/p3", at(2))
	if got := a.get("s1", at(3)); got != "n/p1" {
		t.Fatalf("s1 = %q", got)
	}
	// A fourth session evicts the least recently used: s2 (s1 was read,
	// but reading does not refresh; set does).
	a.set("s4", "n/p4", at(4))
	if a.len() != 3 || a.get("s1", at(4)) != "" || a.get("s2", at(4)) != "n/p2" {
		t.Errorf("after a fourth session: len %d, s1 %q, s2 %q", a.len(), a.get("s1", at(4)), a.get("s2", at(4)))
	}
	// A session served again moves to the front and takes the new pool.
	a.set("s2", "n/p9", at(5))
	a.set("s5", "n/p5", at(6))
	if a.get("s2", at(6)) != "n/p9" || a.get("s3", at(6)) != "" {
		t.Errorf("s2 %q s3 %q", a.get("s2", at(6)), a.get("s3", at(6)))
	}
	// Past the TTL an affinity is gone, whether read or swept by a set.
	if got := a.get("s4", at(4+61)); got != "" {
		t.Errorf("s4 after its TTL = %q", got)
	}
	a.set("s6", "n/p6", at(200))
	if a.len() != 1 {
		t.Errorf("%d affinities after the others expired, want 1", a.len())
	}
	// A flood of distinct sessions never grows it past its size.
	big := newAffinities(time.Hour, 1000)
	for i := range 100_000 {
		big.set(fmt.Sprint("user-", i), "n/p", at(i%3600))
	}
	if big.len() != 1000 || len(big.byID) != 1000 {
		t.Errorf("after 100,000 sessions: %d (%d indexed), want 1000", big.len(), len(big.byID))
	}
}
