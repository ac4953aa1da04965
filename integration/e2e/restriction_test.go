package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/provider"
)

// The writes a virtual node makes on its own objects pass
// manifests/vnode's vnode-restriction policies (which newEnv applies):
// registering and heartbeating its Node and Lease, pod annotations and
// status, marking and unmarking the PVC its pod mounts, and the final
// delete. integration/admission tests that the same writes on another
// node's objects are refused.
func TestNodeWritesPassRestriction(t *testing.T) {
	e := newEnv(t, "process")
	n := e.startNode(t, "vn-own")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := e.cp.Client
	const ns = "claims"
	if err := e.cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	size := corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "share"},
		Spec: corev1.PersistentVolumeSpec{Capacity: size, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nas.example", Path: "/share"}}}}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: new(string), VolumeName: "share",
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, Resources: corev1.VolumeResourceRequirements{Requests: size}}}
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "user", Namespace: ns, Labels: map[string]string{"app": "user"}},
		Spec: corev1.PodSpec{NodeName: n.name, Tolerations: []corev1.Toleration{vkToleration()},
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}}}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := waitPods(ctx, t, c, ns, "app=user", 2*time.Minute, func(ps []corev1.Pod) bool {
		return allRunning(1)(ps) && ps[0].Annotations[provider.AnnotationInstanceID] != ""
	})
	id := running[0].Annotations[provider.AnnotationInstanceID]
	claimHas := func(want bool) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			got, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			v, ok := got.Annotations[provider.AnnotationPVCUsedBy+id]
			return ok == want && (!want || v == ns+"/user"), nil
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, claimHas(true)); err != nil {
		t.Fatalf("the claim was not marked used by %s", id)
	}
	if _, err := c.CoordinationV1().Leases("kube-node-lease").Get(ctx, n.name, metav1.GetOptions{}); err != nil {
		t.Errorf("the node's lease: %v", err)
	}

	if err := c.CoreV1().Pods(ns).Delete(ctx, "user", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0 && len(e.instancesOf(n.name)) == 0, nil
	})
	if err != nil {
		t.Fatalf("the pod or its instance was left behind: %+v", e.instancesOf(n.name))
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, claimHas(false)); err != nil {
		t.Fatalf("the claim's used-by annotation was not removed")
	}
	// No write of the node was refused on the way.
	evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if strings.Contains(ev.Message, "ValidatingAdmissionPolicy") {
			t.Errorf("event %s: %s", ev.Reason, ev.Message)
		}
	}
}
