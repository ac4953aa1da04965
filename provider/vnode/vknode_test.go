package vnode

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
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

// TestPodControllerRecorderDropsSuccessEvents: virtual-kubelet's
// "the provider returned" events are dropped, its failures and every
// other event pass.
func TestPodControllerRecorderDropsSuccessEvents(t *testing.T) {
	fake := record.NewFakeRecorder(10)
	r := podControllerRecorder{fake}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	r.Event(pod, corev1.EventTypeNormal, "ProviderCreateSuccess", "Create pod in provider successfully")
	r.Event(pod, corev1.EventTypeNormal, "ProviderDeleteSuccess", "Delete pod in provider successfully")
	r.Eventf(pod, corev1.EventTypeNormal, "ProviderUpdateSuccess", "Update pod in provider successfully")
	r.Event(pod, corev1.EventTypeWarning, "ProviderCreateFailed", "boom")
	r.Eventf(pod, corev1.EventTypeNormal, "Other", "n=%d", 1)
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	want := []string{"Warning ProviderCreateFailed boom", "Normal Other n=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events recorded: %q, want %q", got, want)
	}
}
