package vnode

import (
	"fmt"
	"testing"
)

// TestPodQueueLimiterPacesNoBurst: a burst of distinct pods gets no delay
// from the queue's limiter; only a pod's own failures back it off. With
// client-go's DefaultTypedControllerRateLimiter (what nodeutil.NewNode
// leaves virtual-kubelet's pod queues on) the 1,000th pod of a burst would
// be scheduled 90 s out by the shared 10-a-second bucket.
func TestPodQueueLimiterPacesNoBurst(t *testing.T) {
	l := podQueueLimiter()
	for i := range 1000 {
		if d := l.When(fmt.Sprintf("ns/p-%d", i)); d != podRetryBase {
			t.Fatalf("pod %d of a burst is delayed %s, want %s (its own first attempt)", i, d, podRetryBase)
		}
	}
	// One pod's failures back it off exponentially, and success forgets them.
	k := "ns/failing"
	for want := podRetryBase; want <= 8*podRetryBase; want *= 2 {
		if d := l.When(k); d != want {
			t.Fatalf("a failing pod's retry is delayed %s, want %s", d, want)
		}
	}
	l.Forget(k)
	if d := l.When(k); d != podRetryBase {
		t.Fatalf("after Forget a pod is delayed %s, want %s", d, podRetryBase)
	}
}
