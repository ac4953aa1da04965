package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoff is capped exponential backoff with full jitter in [d/2, d), so
// agents restarted together do not reconnect in lock step.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur
	if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	half := d / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }
