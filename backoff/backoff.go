// Package backoff computes capped exponential retry delays with jitter,
// used wherever llorch retries against something that may be down: agent
// registration, engine restarts.
package backoff

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
	attempt = max(attempt, 0)
	// Base << attempt is at most Max exactly when Base <= Max >> attempt;
	// testing it that way round never shifts Base past int64.
	if b.Base > 0 && attempt < 63 && b.Base <= b.Max>>attempt {
		d = b.Base << attempt
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}
