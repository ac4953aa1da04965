package vnode

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/vnode-project/vnode/provider"
)

func managed() []metav1.ManagedFieldsEntry {
	return []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}}
}

// The virtual node's client drops managedFields from what its informers
// list and watch, and from pods the provider's own annotations too.
func TestTrimmedClientDropsManagedFieldsFromListsAndWatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", ManagedFields: managed(),
		Annotations: map[string]string{"keep": "me", provider.AnnotationInstanceID: "eci-1", provider.AnnotationInstanceZone: "z"}}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ManagedFields: managed()}}
	raw := fake.NewClientset(pod, secret)
	c := newTrimmedClient(raw)
	trimmed := func(p *corev1.Pod) bool {
		_, id := p.Annotations[provider.AnnotationInstanceID]
		_, zone := p.Annotations[provider.AnnotationInstanceZone]
		return p.ManagedFields == nil && p.Annotations["keep"] == "me" && !id && !zone
	}

	pods, err := c.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || !trimmed(&pods.Items[0]) {
		t.Fatalf("listed pods = %+v, want one pod with only others' annotations and no managedFields", pods.Items)
	}
	secrets, err := c.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{})
	if err != nil || len(secrets.Items) != 1 || secrets.Items[0].ManagedFields != nil {
		t.Fatalf("listed secrets = %+v, %v; want one without managedFields", secrets, err)
	}
	// Single reads are not trimmed: only what the informers cache is.
	got, err := c.CoreV1().Pods("ns").Get(ctx, "a", metav1.GetOptions{})
	if err != nil || got.ManagedFields == nil || got.Annotations[provider.AnnotationInstanceID] != "eci-1" {
		t.Fatalf("get = %+v, %v; want managedFields and annotations kept", got, err)
	}

	// An informer over the client caches trimmed objects, also those it
	// learns of by watching.
	f := informers.NewSharedInformerFactory(c, 0)
	inf := f.Core().V1().Pods()
	lister := inf.Lister()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		t.Fatal("informer never synced")
	}
	second := pod.DeepCopy()
	second.Name = "b"
	// Annotated by the provider alone: as it was before, with no map.
	third := pod.DeepCopy()
	third.Name = "c"
	third.Annotations = map[string]string{provider.AnnotationInstanceID: "eci-3"}
	if _, err := raw.CoreV1().Pods("ns").Create(ctx, third, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.CoreV1().Pods("ns").Create(ctx, second, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := lister.Pods("ns").Get("b")
		if err == nil {
			if !trimmed(p) {
				t.Fatalf("watched pod kept managedFields or the provider's annotations: %+v", p.ObjectMeta)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the watched pod never reached the informer")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if p, err := lister.Pods("ns").Get("c"); err != nil || p.Annotations != nil {
		t.Fatalf("watched pod c = %+v, %v; want no annotations map at all", p, err)
	}
	if p, err := lister.Pods("ns").Get("a"); err != nil || !trimmed(p) {
		t.Fatalf("listed pod in the informer = %+v, %v; want it trimmed", p, err)
	}
}
