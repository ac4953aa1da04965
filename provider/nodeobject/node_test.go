package nodeobject

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vnode-project/vnode/internal/identity"
)

func TestApply(t *testing.T) {
	n := &corev1.Node{}
	n.Name = "cn-hangzhou.vnd-1"
	n.Labels = map[string]string{"keep": "me"}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), "nvidia.com/gpu": resource.MustParse("2")}
	Apply(n, Config{
		Name: n.Name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-h", "cn-hangzhou-i"},
		Taints:   []corev1.Taint{{Key: "team", Value: "x", Effect: corev1.TaintEffectNoExecute}},
		Capacity: capacity, InternalIP: "127.0.0.1", KubeletPort: 10250, KubeletVersion: "v1.35.4-vnode",
	})
	for k, v := range map[string]string{"keep": "me", "type": "virtual-kubelet", "kubernetes.io/role": "agent",
		"topology.kubernetes.io/region": "cn-hangzhou", "topology.kubernetes.io/zone": "cn-hangzhou-h", "kubernetes.io/os": "linux",
		"vnode.io/zone.cn-hangzhou-h": "true", "vnode.io/zone.cn-hangzhou-i": "true"} {
		if n.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, n.Labels[k], v)
		}
	}
	if len(n.Spec.Taints) != 2 || n.Spec.Taints[0].Key != identity.TaintKey || n.Spec.Taints[0].Value != "alibabacloud" || n.Spec.Taints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("taints %+v", n.Spec.Taints)
	}
	if q := n.Status.Capacity["nvidia.com/gpu"]; q.String() != "2" {
		t.Errorf("gpu capacity %s", q.String())
	}
	capacity[corev1.ResourceCPU] = resource.MustParse("1")
	if q := n.Status.Allocatable[corev1.ResourceCPU]; q.String() != "64" {
		t.Errorf("allocatable shares the caller's map: %s", q.String())
	}
	if n.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 || n.Status.Addresses[0].Address != "127.0.0.1" {
		t.Errorf("endpoint %+v addresses %+v", n.Status.DaemonEndpoints, n.Status.Addresses)
	}
	if c := n.Status.Conditions[0]; c.Type != corev1.NodeReady || c.Status != corev1.ConditionFalse {
		t.Errorf("a starting node must not claim Ready: %+v", c)
	}
}

type flakyChecker struct {
	mu  sync.Mutex
	err error
}

func (f *flakyChecker) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *flakyChecker) set(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func TestReadyFollowsECI(t *testing.T) {
	checker := &flakyChecker{}
	n := &corev1.Node{}
	Apply(n, Config{Name: "n"})
	p := NewProvider(n, checker, 10*time.Millisecond, logrus.New())
	w := watchReady(t, p)
	w.expect(corev1.ConditionTrue, ReasonReady)
	checker.set(errors.New("dial tcp: connection refused"))
	u := w.expect(corev1.ConditionFalse, ReasonNotReady)
	if !strings.Contains(u.Status.Conditions[0].Message, "connection refused") {
		t.Errorf("message does not say why: %s", u.Status.Conditions[0].Message)
	}
	if err := p.Ping(context.Background()); err == nil {
		t.Error("Ping succeeded while ECI is unreachable")
	}
	checker.set(nil)
	w.expect(corev1.ConditionTrue, ReasonReady)
	w.quiet() // no change, no update
}

// readyWatch follows a node provider's status updates.
type readyWatch struct {
	t       *testing.T
	updates chan *corev1.Node
}

func watchReady(t *testing.T, p *Provider) *readyWatch {
	w := &readyWatch{t: t, updates: make(chan *corev1.Node, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.NotifyNodeStatus(ctx, func(n *corev1.Node) { w.updates <- n })
	return w
}

// expect waits for the next update and checks its Ready condition.
func (w *readyWatch) expect(status corev1.ConditionStatus, reason string) *corev1.Node {
	w.t.Helper()
	select {
	case u := <-w.updates:
		c := u.Status.Conditions[0]
		if c.Status != status || c.Reason != reason {
			w.t.Fatalf("Ready=%s (%s), want %s (%s)", c.Status, c.Reason, status, reason)
		}
		return u
	case <-time.After(5 * time.Second):
		w.t.Fatalf("no update to Ready=%s (%s)", status, reason)
	}
	return nil
}

// quiet fails if an update comes within 100 ms.
func (w *readyWatch) quiet() {
	w.t.Helper()
	select {
	case u := <-w.updates:
		w.t.Fatalf("unexpected update %+v", u.Status.Conditions[0])
	case <-time.After(100 * time.Millisecond):
	}
}
