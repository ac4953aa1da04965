package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/provider/translate"
)

// A pod author cannot pick the instance's RAM role (its cloud credentials)
// on a node whose config does not allow it: the pod is Failed with a reason
// naming the annotation and how to allow it, and a Warning event. Values
// the node already uses (its vSwitch, its security group) pass. Once an
// admin annotates the namespace, the same pod runs.
func TestPodAnnotationAllowList(t *testing.T) {
	e := newEnv(t, "process")
	n := e.startNode(t, "vn-allow")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := e.cp.Client
	const ns = "roles"
	if err := e.cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, ann map[string]string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}, Annotations: ann},
			Spec: corev1.PodSpec{NodeName: n.name, RestartPolicy: corev1.RestartPolicyNever, Tolerations: []corev1.Toleration{vkToleration()},
				Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}}
		if _, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	role := map[string]string{translate.AnnotationRAMRole: "AdminRole"}

	pod("own-placement", map[string]string{translate.AnnotationVSwitch: "vsw-e2e", translate.AnnotationSecurityGroup: "sg-e2e"})
	waitPods(ctx, t, c, ns, "app=own-placement", time.Minute, allRunning(1))

	pod("role", role)
	failed := waitPods(ctx, t, c, ns, "app=role", time.Minute, func(ps []corev1.Pod) bool {
		return len(ps) == 1 && ps[0].Status.Phase == corev1.PodFailed
	})
	st := failed[0].Status
	if st.Reason != translate.ReasonAnnotationNotAllowed || !strings.Contains(st.Message, translate.AnnotationRAMRole) ||
		!strings.Contains(st.Message, translate.NamespaceAllowedAnnotations+"="+translate.AnnotationRAMRole) {
		t.Errorf("refused pod's status %q: %q", st.Reason, st.Message)
	}
	for _, g := range e.instancesOf(n.name) {
		if g.Tags[translate.TagPod] == "role" {
			t.Errorf("an instance was created for the refused pod: %+v", g)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=role"})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Reason == translate.ReasonAnnotationNotAllowed && ev.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no %s event on the pod", translate.ReasonAnnotationNotAllowed)
	}

	// The admin allows the RAM role for this namespace.
	patch := `{"metadata":{"annotations":{"` + translate.NamespaceAllowedAnnotations + `":"` + translate.AnnotationRAMRole + `"}}}`
	if _, err := c.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pod("role-allowed", role)
	waitPods(ctx, t, c, ns, "app=role-allowed", time.Minute, allRunning(1))
}
