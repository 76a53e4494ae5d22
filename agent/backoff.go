package agent

import (
	"math/rand/v2"
	"time"
)

// Backoff computes capped exponential delays with "equal jitter": half the
// delay is fixed, half random, so a fleet restarting together spreads out
// but no agent retries in a tight loop.
type Backoff struct {
	Base, Max time.Duration
	// Rand returns a value in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// Delay returns the wait before retry number attempt (0-based).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Max
	if attempt < 32 { // beyond that the shift overflows; the cap applies anyway
		if e := b.Base << attempt; e > 0 && e < b.Max {
			d = e
		}
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}
