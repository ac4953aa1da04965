// Package backoff is vnode's one capped exponential backoff with jitter,
// for loops that wait between attempts outside a workqueue: the ECI
// client's retries of a call and the tunnel agent's reconnects.
// (Controllers retry through client-go's rate-limited workqueues instead.)
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy doubles the wait from Base at each attempt up to Max.
type Policy struct {
	Base, Max time.Duration
}

// Delay is the wait before retry number attempt (1 for the first retry):
// uniform in [d/2, d] with d = min(Max, Base·2^(attempt-1)), so callers
// that failed together do not retry in lock step, and none retries at
// once.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.ceiling(attempt)
	half := d / 2
	return half + rand.N(d-half+1)
}

func (p Policy) ceiling(attempt int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	attempt = max(attempt, 1)
	d := p.Base
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	return d
}
