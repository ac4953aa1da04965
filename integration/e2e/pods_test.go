package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/provider"
	"github.com/vnode-project/vnode/provider/translate"
)

// A Deployment scheduled by the real scheduler onto the virtual node runs
// as ECI instances with the annotations written back; scaling down deletes
// exactly the right instances; a pod ECI cannot run is Failed with a
// reason and an event; deleting everything leaves no instance.
func TestDeploymentOnVirtualNode(t *testing.T) {
	e := newEnv(t, "process")
	n := e.startNode(t, "vn-e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := e.cp.Client
	if err := e.cp.CreateNamespace(ctx, "apps"); err != nil {
		t.Fatal(err)
	}

	node, err := c.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels["type"] != "virtual-kubelet" || len(node.Spec.Taints) == 0 || node.Spec.Taints[0].Key != "virtual-kubelet.io/provider" {
		t.Fatalf("node %v taints %v", node.Labels, node.Spec.Taints)
	}

	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"type": "virtual-kubelet"},
					Tolerations:  []corev1.Toleration{vkToleration()},
					Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27",
						Command: []string{"/bin/sh", "-c", "echo serving $POD_NAME; sleep 3600"},
						Env:     []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
				},
			},
		},
	}
	if _, err := c.AppsV1().Deployments("apps").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitPods(ctx, t, c, "apps", "app=web", 2*time.Minute, allRunning(3))
	ids := map[string]string{}
	for _, p := range pods {
		if p.Spec.NodeName != n.name {
			t.Fatalf("pod %s on %s", p.Name, p.Spec.NodeName)
		}
		if p.Status.PodIP == "" || p.Status.ContainerStatuses[0].State.Running == nil {
			t.Errorf("pod %s status %+v", p.Name, p.Status)
		}
		ids[p.Name] = p.Annotations[provider.AnnotationInstanceID]
	}
	// Annotations are written back (size and zone after the first sync).
	pods = waitPods(ctx, t, c, "apps", "app=web", time.Minute, func(ps []corev1.Pod) bool {
		for _, p := range ps {
			for _, k := range []string{provider.AnnotationInstanceID, provider.AnnotationInstanceSpec, provider.AnnotationInstanceCPU,
				provider.AnnotationInstanceMem, provider.AnnotationInstanceZone, provider.AnnotationRequestID, provider.AnnotationClientToken, provider.AnnotationVKVersion} {
				if p.Annotations[k] == "" {
					t.Logf("pod %s lacks %s (has %v)", p.Name, k, p.Annotations)
					return false
				}
			}
		}
		return true
	})
	if got := len(e.instancesOf(n.name)); got != 3 {
		t.Fatalf("%d instances for 3 pods", got)
	}
	for _, g := range e.instancesOf(n.name) {
		if g.Tags[translate.TagCluster] != "e2e" || g.Tags[translate.TagPodUID] == "" || g.Status != "Running" {
			t.Errorf("instance %+v", g)
		}
	}

	// A pod with nodeName set (no scheduler) works too.
	direct := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "direct", Namespace: "apps", Labels: map[string]string{"app": "direct"}},
		Spec: corev1.PodSpec{NodeName: n.name, Tolerations: []corev1.Toleration{vkToleration()}, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := c.CoreV1().Pods("apps").Create(ctx, direct, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, c, "apps", "app=direct", time.Minute, allRunning(1))

	// What ECI cannot run is Failed with a reason and an event.
	hostPath := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hostpath", Namespace: "apps", Labels: map[string]string{"app": "hostpath"}},
		Spec: corev1.PodSpec{NodeName: n.name, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "h", MountPath: "/h"}}}},
			Volumes: []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var"}}}}}}
	if _, err := c.CoreV1().Pods("apps").Create(ctx, hostPath, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	failed := waitPods(ctx, t, c, "apps", "app=hostpath", time.Minute, func(ps []corev1.Pod) bool {
		return len(ps) == 1 && ps[0].Status.Phase == corev1.PodFailed
	})
	if failed[0].Status.Reason != "HostPathNotSupported" || !strings.Contains(failed[0].Status.Message, "hostPath") {
		t.Errorf("failed pod status %q: %q", failed[0].Status.Reason, failed[0].Status.Message)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := c.CoreV1().Events("apps").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=hostpath"})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Reason == "HostPathNotSupported" && ev.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Error("no HostPathNotSupported event on the pod")
	}

	// Scale down: exactly the deleted pods' instances go.
	scale, err := c.AppsV1().Deployments("apps").GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 1
	if _, err := c.AppsV1().Deployments("apps").UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	left := waitPods(ctx, t, c, "apps", "app=web", 2*time.Minute, func(ps []corev1.Pod) bool { return len(ps) == 1 && ps[0].Status.Phase == corev1.PodRunning })
	keep := left[0].Annotations[provider.AnnotationInstanceID]
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		var web []string
		for _, g := range e.instancesOf(n.name) {
			if strings.HasPrefix(g.Name, "apps-web-") {
				web = append(web, g.ID)
			}
		}
		return len(web) == 1 && web[0] == keep, nil
	})
	if err != nil {
		t.Fatalf("after scale-down the instances are %+v, want only %s", e.instancesOf(n.name), keep)
	}

	// Everything deleted: no instance of this node is left.
	if err := c.AppsV1().Deployments("apps").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"direct", "hostpath"} {
		_ = c.CoreV1().Pods("apps").Delete(ctx, p, metav1.DeleteOptions{})
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0 && len(e.instancesOf(n.name)) == 0, nil
	})
	if err != nil {
		t.Fatalf("left behind: instances %+v", e.instancesOf(n.name))
	}
	_ = ids
}
