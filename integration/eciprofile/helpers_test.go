package eciprofile

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vnode-project/vnode/eciprofile/profile"
	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/internal/identity"
)

func httpGet(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s", errStatus, resp.Status)
	}
	return nil
}

// podSpec is a pod that needs only to bind: no kubelet will run it.
func newPod(name string, labels map[string]string, cpu string) *corev1.Pod {
	c := corev1.Container{Name: "app", Image: "registry.example/app:1"}
	if cpu != "" {
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
}

func (e *env) createPod(ctx context.Context, tb testing.TB, ns string, pod *corev1.Pod) *corev1.Pod {
	tb.Helper()
	got, err := e.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("creating pod %s/%s: %v", ns, pod.Name, err)
	}
	return got
}

// dryRun is what admission makes of pod now, without creating it: the
// webhook (sideEffects None) is called for dry runs too, so tests wait on
// it for a reload to take effect.
func (e *env) dryRun(ctx context.Context, ns string, pod *corev1.Pod) (*corev1.Pod, error) {
	return e.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// waitBound waits until the scheduler has bound the pod and returns it.
func (e *env) waitBound(ctx context.Context, tb testing.TB, ns, name string) *corev1.Pod {
	tb.Helper()
	var pod *corev1.Pod
	waitFor(ctx, tb, "pod "+ns+"/"+name+" to bind", func(ctx context.Context) (bool, error) {
		var err error
		pod, err = e.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && pod.Spec.NodeName != "", err
	})
	return pod
}

func targetsVirtual(pod *corev1.Pod) bool {
	if pod.Spec.NodeSelector[identity.NodeTypeLabel] != identity.NodeTypeVirtual {
		return false
	}
	return tolerates(pod)
}

func tolerates(pod *corev1.Pod) bool {
	for _, t := range pod.Spec.Tolerations {
		if t.Key == identity.TaintKey {
			return true
		}
	}
	return false
}

func (e *env) setConfigMap(ctx context.Context, tb testing.TB, data map[string]string) {
	tb.Helper()
	cms := e.client.CoreV1().ConfigMaps(profile.ConfigMapNamespace)
	cm, err := cms.Get(ctx, profile.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: profile.ConfigMapName, Namespace: profile.ConfigMapNamespace}, Data: data}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			tb.Fatal(err)
		}
		return
	}
	cm.Data = data
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// applySelector creates or replaces a Selector from its spec.
func (e *env) applySelector(ctx context.Context, tb testing.TB, name string, spec map[string]any) {
	tb.Helper()
	api := e.dyn.Resource(webhook.SelectorGVR)
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": profile.Group + "/" + profile.Version, "kind": profile.Kind,
		"metadata": map[string]any{"name": name}, "spec": spec}}
	old, err := api.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(old.GetResourceVersion())
		_, err = api.Update(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		tb.Fatalf("applying Selector %s: %v", name, err)
	}
}

// waitWarning waits for a Warning event with reason on the object.
func (e *env) waitWarning(ctx context.Context, tb testing.TB, ns, kind, name, reason string) *corev1.Event {
	tb.Helper()
	var found *corev1.Event
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name, "reason": reason, "type": corev1.EventTypeWarning}.AsSelector().String()
	waitFor(ctx, tb, fmt.Sprintf("a %s event on %s %s", reason, kind, name), func(ctx context.Context) (bool, error) {
		evs, err := e.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		found = &evs.Items[len(evs.Items)-1]
		return true, nil
	})
	return found
}
