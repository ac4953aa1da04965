package main

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vnode-project/vnode/eci/model"
)

func testPod(i int) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p" + strconv.Itoa(i)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

// waitFor polls cond: the worker runs in its own goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// The floor's creates are paced by ECI's published CreateContainerGroup
// quota: a burst of creates runs the quota's burst at once, and each
// create beyond it waits for its token, one per 60 s / quota of the
// limiter's (fake) clock, as vnode's creates wait on ECI's quota.
func TestCreatesBeyondBurstWaitForTokens(t *testing.T) {
	perMin := model.Quotas["CreateContainerGroup"]
	burst := model.QuotaBurst(perMin)
	interval := time.Minute / time.Duration(perMin)
	clk := clocktesting.NewFakeClock(time.Now())
	p := newProvider(createLimiter(), clk)
	if p.limiter.Burst() != burst || float64(p.limiter.Limit()) != float64(perMin)/60 {
		t.Fatalf("limiter %v/s burst %d, want ECI's %d a minute, burst %d", p.limiter.Limit(), p.limiter.Burst(), perMin, burst)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var running atomic.Int32
	p.NotifyPods(ctx, func(pod *corev1.Pod) {
		if pod.Status.Phase == corev1.PodRunning {
			running.Add(1)
		}
	})
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()

	const beyond = 3
	for i := range burst + beyond {
		if err := p.CreatePod(ctx, testPod(i)); err != nil {
			t.Fatal(err)
		}
	}
	// CreatePod only queued: the pod is Pending until its token.
	if pod, err := p.GetPod(ctx, "ns", "p"+strconv.Itoa(burst+beyond-1)); err != nil || pod.Status.Phase != corev1.PodPending {
		t.Fatalf("the last pod created: %v, %v; want Pending", pod, err)
	}
	// The burst runs at once; the next create then waits on the clock.
	waitFor(t, "the burst to run", func() bool { return int(running.Load()) == burst && clk.HasWaiters() })
	for i := 1; i <= beyond; i++ {
		// Less than one token's interval runs none: the worker stays
		// blocked on its timer, so the count cannot move.
		clk.Step(interval / 2)
		if got := int(running.Load()); got != burst+i-1 || !clk.HasWaiters() {
			t.Fatalf("after half a token's interval: %d Running, want %d", got, burst+i-1)
		}
		clk.Step(interval/2 + time.Millisecond)
		waitFor(t, "one more create", func() bool {
			return int(running.Load()) == burst+i && (i == beyond || clk.HasWaiters())
		})
	}
	if got := int(running.Load()); got != burst+beyond {
		t.Fatalf("%d Running, want %d", got, burst+beyond)
	}
	if pod, err := p.GetPod(ctx, "ns", "p"+strconv.Itoa(burst+beyond-1)); err != nil || pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("the last pod created: %v, %v; want Running", pod, err)
	}
	cancel()
	<-done
}

// A pod deleted while it waits for a token takes none: the next pod in
// the queue gets it.
func TestDeletedWhileQueuedTakesNoToken(t *testing.T) {
	perMin := model.Quotas["CreateContainerGroup"]
	burst := model.QuotaBurst(perMin)
	clk := clocktesting.NewFakeClock(time.Now())
	p := newProvider(createLimiter(), clk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started []string
	startedN := atomic.Int32{}
	p.NotifyPods(ctx, func(pod *corev1.Pod) { started = append(started, pod.Name); startedN.Add(1) })
	// Queued before the worker runs: the burst's pods, then one to be
	// deleted, then the one that must get the first paced token.
	for i := range burst + 2 {
		if err := p.CreatePod(ctx, testPod(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.DeletePod(ctx, testPod(burst)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	waitFor(t, "the burst to run", func() bool { return int(startedN.Load()) == burst && clk.HasWaiters() })
	clk.Step(time.Minute / time.Duration(perMin))
	waitFor(t, "the next pod", func() bool { return int(startedN.Load()) == burst+1 })
	cancel()
	<-done
	if last := started[len(started)-1]; last != "p"+strconv.Itoa(burst+1) {
		t.Fatalf("the first paced token went to %s, want p%d", last, burst+1)
	}
}

// Unpaced (-eci-create-quota=false), CreatePod makes the pod Running at
// once, the floor as it was measured before pacing.
func TestUnpacedRunsAtOnce(t *testing.T) {
	p := newProvider(nil, clocktesting.NewFakeClock(time.Now()))
	ctx := context.Background()
	var notified int
	p.NotifyPods(ctx, func(*corev1.Pod) { notified++ })
	for i := range 100 {
		if err := p.CreatePod(ctx, testPod(i)); err != nil {
			t.Fatal(err)
		}
	}
	pods, _ := p.GetPods(ctx)
	for _, pod := range pods {
		if pod.Status.Phase != corev1.PodRunning {
			t.Fatalf("%s is %s, want Running", pod.Name, pod.Status.Phase)
		}
	}
	if notified != 100 {
		t.Fatalf("%d notified, want 100", notified)
	}
}
