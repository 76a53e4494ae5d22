package backoff

import (
	"math"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const almostOne = 0.9999999999999999 // largest float64 below 1
	lo := func() float64 { return 0 }
	hi := func() float64 { return almostOne }
	top := func(d time.Duration) time.Duration { return d - time.Nanosecond }
	std := func(r func() float64) Backoff {
		return Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second, Rand: r}
	}
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		// Rand 0: the fixed half of the delay.
		{"attempt 0 low", std(lo), 0, 50 * time.Millisecond},
		{"attempt 1 low", std(lo), 1, 100 * time.Millisecond},
		{"attempt 2 low", std(lo), 2, 200 * time.Millisecond},
		{"attempt 3 low", std(lo), 3, 400 * time.Millisecond},
		{"attempt 4 low", std(lo), 4, 800 * time.Millisecond},
		{"attempt 5 low capped", std(lo), 5, 1 * time.Second},
		{"attempt 6 low capped", std(lo), 6, 1 * time.Second},
		// Rand just below 1: the whole delay, less the nanosecond that
		// truncating the random half loses.
		{"attempt 0 high", std(hi), 0, top(100 * time.Millisecond)},
		{"attempt 1 high", std(hi), 1, top(200 * time.Millisecond)},
		{"attempt 4 high", std(hi), 4, top(1600 * time.Millisecond)},
		{"attempt 5 high capped", std(hi), 5, top(2 * time.Second)},
		// Huge attempt numbers never overflow into a short or negative delay.
		{"attempt 31", std(lo), 31, 1 * time.Second},
		{"attempt 32", std(lo), 32, 1 * time.Second},
		{"attempt 63", std(hi), 63, top(2 * time.Second)},
		{"attempt 64", std(hi), 64, top(2 * time.Second)},
		{"attempt 1000", std(lo), 1000, 1 * time.Second},
		{"attempt MaxInt", std(hi), math.MaxInt, top(2 * time.Second)},
		// A base whose shift wraps around int64 within 32 attempts:
		// (2^33+1ns) << 31 is 2^64 + 2^31, which wraps to 2^31ns (~2.1s).
		{"wrapping base", Backoff{Base: 1<<33 + 1, Max: time.Hour, Rand: lo}, 31, 30 * time.Minute},
		{"large base below max", Backoff{Base: time.Hour, Max: 1000 * time.Hour, Rand: lo}, 9, 256 * time.Hour},
		{"large base capped", Backoff{Base: time.Hour, Max: 1000 * time.Hour, Rand: lo}, 30, 500 * time.Hour},
		{"max at int64 limit", Backoff{Base: time.Second, Max: math.MaxInt64, Rand: lo}, 40, math.MaxInt64 / 2},
		// A negative attempt is treated as the first one, not a panic.
		{"negative attempt", std(lo), -1, 50 * time.Millisecond},
		// Base equal to max: always max.
		{"base equals max", Backoff{Base: time.Second, Max: time.Second, Rand: hi}, 0, top(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt); got != tt.want {
				t.Errorf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

// TestBackoffDelayBounds checks equal jitter with the real random source: every
// delay lies in [d/2, d] and the cap holds, and d never shrinks as attempts grow.
func TestBackoffDelayBounds(t *testing.T) {
	b := Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}
	prevCeil := time.Duration(0)
	for attempt := 0; attempt < 70; attempt++ {
		ceil := min(b.Base<<min(attempt, 20), b.Max)
		if ceil < prevCeil {
			t.Fatalf("ceiling shrank at attempt %d", attempt)
		}
		prevCeil = ceil
		for i := 0; i < 50; i++ {
			d := b.Delay(attempt)
			if d < ceil/2 || d > ceil {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
}
