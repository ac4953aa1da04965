package nodeobject

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
)

// fakeSessions is a tunnel whose connection the test switches.
type fakeSessions struct{ up atomic.Bool }

func (f *fakeSessions) Connected() bool { return f.up.Load() }

func TestReadyFollowsTunnel(t *testing.T) {
	checker := &flakyChecker{}
	tunnel := &fakeSessions{}
	n := &corev1.Node{}
	Apply(n, Config{Name: "n"})
	// ECI is checked rarely, the tunnel often: a tunnel change must show
	// without waiting for the next ECI call.
	p := NewProvider(n, checker, time.Hour, logrus.New()).WithTunnel(tunnel, 10*time.Millisecond)
	w := watchReady(t, p)
	// No session yet: not Ready, and the reason says why.
	u := w.expect(corev1.ConditionFalse, ReasonTunnelDown)
	if !strings.Contains(u.Status.Conditions[0].Message, "tunnel") {
		t.Errorf("message does not say why: %s", u.Status.Conditions[0].Message)
	}
	tunnel.up.Store(true)
	w.expect(corev1.ConditionTrue, ReasonReady)
	tunnel.up.Store(false)
	w.expect(corev1.ConditionFalse, ReasonTunnelDown)
	tunnel.up.Store(true)
	w.expect(corev1.ConditionTrue, ReasonReady)
	w.quiet() // no change, no update
}

// ECI down wins over a healthy tunnel: the reason names the cloud.
func TestECIReasonWinsOverTunnel(t *testing.T) {
	checker := &flakyChecker{}
	checker.set(errors.New("dial tcp: connection refused"))
	tunnel := &fakeSessions{}
	tunnel.up.Store(true)
	n := &corev1.Node{}
	Apply(n, Config{Name: "n"})
	p := NewProvider(n, checker, 10*time.Millisecond, logrus.New()).WithTunnel(tunnel, 10*time.Millisecond)
	updates := make(chan *corev1.Node, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.NotifyNodeStatus(ctx, func(n *corev1.Node) { updates <- n })
	select {
	case u := <-updates:
		if c := u.Status.Conditions[0]; c.Status != corev1.ConditionFalse || c.Reason != ReasonNotReady {
			t.Fatalf("Ready=%s (%s), want False (%s)", c.Status, c.Reason, ReasonNotReady)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no update")
	}
}
