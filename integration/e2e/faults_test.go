package e2e

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/provider"
	"github.com/vnode-project/vnode/provider/translate"
)

// Under injected throttling and 5xx, with the virtual node killed and
// restarted mid-burst, every pod runs on exactly one instance; a reclaimed
// (spot) or vanished instance fails its pod with the reason; the API server
// restarting is survived; deleting everything leaves no instance.
func TestFaultsAndRecovery(t *testing.T) {
	const replicas = 300
	e := newEnv(t, "sim")
	n := e.startNode(t, "vn-faults")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	c := e.cp.Client
	if err := e.cp.CreateNamespace(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	e.emu.SetFaults(
		emulator.Fault{Action: "CreateContainerGroup", ErrorRate: 0.20, ErrorCode: "Throttling.User"},
		emulator.Fault{Action: "CreateContainerGroup", ErrorRate: 0.0625, ErrorCode: "ServiceUnavailable"},
		emulator.Fault{Action: "DescribeContainerGroups", ErrorRate: 0.05, ErrorCode: "ServiceUnavailable"},
	)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "burst", Namespace: "f"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "burst"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "burst"}},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"type": "virtual-kubelet"}, Tolerations: []corev1.Toleration{vkToleration()},
					Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			},
		},
	}
	if _, err := c.AppsV1().Deployments("f").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Kill the node once some instances exist, and start it again.
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return len(e.instancesOf(n.name)) >= replicas/4, nil
	})
	if err != nil {
		t.Fatal("no instance was created")
	}
	n.stop()
	t.Logf("killed the node with %d instances created", len(e.instancesOf(n.name)))
	n = e.startNode(t, "vn-faults")

	pods := waitPods(ctx, t, c, "f", "app=burst", 6*time.Minute, allRunning(replicas))
	insts := e.instancesOf(n.name)
	if len(insts) != replicas {
		t.Fatalf("%d instances for %d pods", len(insts), replicas)
	}
	byUID := map[string]string{}
	for _, g := range insts {
		if prev, dup := byUID[g.Tags[translate.TagPodUID]]; dup {
			t.Fatalf("pod %s has two instances: %s and %s", g.Tags[translate.TagPod], prev, g.ID)
		}
		byUID[g.Tags[translate.TagPodUID]] = g.ID
	}
	for _, p := range pods {
		if byUID[string(p.UID)] == "" || p.Annotations[provider.AnnotationInstanceID] != byUID[string(p.UID)] {
			t.Fatalf("pod %s annotated %q, its instance is %q", p.Name, p.Annotations[provider.AnnotationInstanceID], byUID[string(p.UID)])
		}
	}
	e.emu.SetFaults()

	// Spot reclamation and an instance deleted behind vnode's back.
	expired, vanished := pods[0], pods[1]
	if err := e.emu.Expire(byUID[string(expired.UID)]); err != nil {
		t.Fatal(err)
	}
	if err := e.emu.DeleteBehindBack(byUID[string(vanished.UID)]); err != nil {
		t.Fatal(err)
	}
	for name, reason := range map[string]string{expired.Name: "ECIInstanceExpired", vanished.Name: provider.ReasonVanished} {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("f").Get(ctx, name, metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodFailed && p.Status.Reason == reason, nil
		})
		if err != nil {
			p, _ := c.CoreV1().Pods("f").Get(ctx, name, metav1.GetOptions{})
			t.Fatalf("pod %s: phase %s reason %q, want Failed %s", name, p.Status.Phase, p.Status.Reason, reason)
		}
	}

	// The API server goes away and comes back; the node carries on: the
	// ReplicaSet's replacements for the two failed pods run.
	if err := e.cp.RestartAPIServer(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, c, "f", "app=burst", 3*time.Minute, func(ps []corev1.Pod) bool {
		running := 0
		for _, p := range ps {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == replicas
	})

	if err := c.AppsV1().Deployments("f").Delete(ctx, "burst", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods("f").List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0 && len(e.instancesOf(n.name)) == 0, nil
	})
	if err != nil {
		t.Fatalf("left behind: %d instances", len(e.instancesOf(n.name)))
	}
}

// A pod deleted while its node is down leaves no instance: the restarted
// node does not adopt the instance (its pod is gone from the API server),
// and its full list, on a goroutine of its own a GCInterval after start,
// deletes it. The pod that is still there keeps its instance.
func TestOrphanIsCollectedAfterARestart(t *testing.T) {
	e := newEnv(t, "sim")
	n := e.startNode(t, "vn-orphans")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := e.cp.Client
	if err := e.cp.CreateNamespace(ctx, "o"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kept", "gone"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "o", Labels: map[string]string{"app": "o"}},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"type": "virtual-kubelet"}, Tolerations: []corev1.Toleration{vkToleration()},
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}
		if _, err := c.CoreV1().Pods("o").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := waitPods(ctx, t, c, "o", "app=o", 2*time.Minute, allRunning(2))
	uids := map[string]string{}
	for _, p := range pods {
		uids[p.Name] = string(p.UID)
	}

	n.stop()
	if err := c.CoreV1().Pods("o").Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, c, "o", "app=o", time.Minute, func(ps []corev1.Pod) bool { return len(ps) == 1 })
	if len(e.instancesOf(n.name)) != 2 {
		t.Fatalf("%d instances while the node was down, want both", len(e.instancesOf(n.name)))
	}
	n = e.startNode(t, "vn-orphans")

	var left []emulator.ContainerGroupSnapshot
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		left = e.instancesOf(n.name)
		return len(left) == 1, nil
	})
	if err != nil {
		t.Fatalf("%d instances a minute after the restart, want the orphan collected", len(left))
	}
	if got := left[0].Tags[translate.TagPodUID]; got != uids["kept"] {
		t.Fatalf("the instance left is pod %s's, want kept's (%s)", got, uids["kept"])
	}
	waitPods(ctx, t, c, "o", "app=o", 30*time.Second, allRunning(1))
}
