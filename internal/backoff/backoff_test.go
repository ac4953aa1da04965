package backoff

import (
	"testing"
	"time"
)

func TestDelayDoublesWithinJitterAndCap(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt, ceiling := range map[int]time.Duration{
		0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second,
	} {
		for range 200 {
			d := p.Delay(attempt)
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, ceiling/2, ceiling)
			}
		}
	}
	if d := (Policy{}).Delay(3); d != 0 {
		t.Fatalf("a zero policy waits %v", d)
	}
}

func TestDelayIsJittered(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[p.Delay(4)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 delays took only %d values: callers would retry in lock step", len(seen))
	}
}
