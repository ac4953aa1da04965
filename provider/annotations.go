package provider

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// annotate adds annotations of the provider's own to e's pod and queues its
// status for virtual-kubelet; mu is held. They cost no request of their
// own: virtual-kubelet writes the reported pod through pods/status, which
// keeps the metadata it is sent (all but labels and owners), so the status
// write carries them. A PATCH of their own was one request and one watch
// event more per pod, and an annotation change virtual-kubelet's pod
// controller re-synced the whole pod for (a go-cmp of the pod, GetPod,
// UpdatePod): the largest single part of the node's CPU in a 10,000-pod
// burst. Its informer now never shows them (vnode's trimmed client).
func (p *Provider) annotate(e *entry, kv map[string]string) {
	ann := make(map[string]string, len(e.pod.Annotations)+len(kv))
	for k, v := range e.pod.Annotations {
		ann[k] = v
	}
	for k, v := range kv {
		if v != "" {
			ann[k] = v
		}
	}
	e.pod.Annotations = ann
	p.changed(e)
}

// markClaims writes the instance's id on each claim the pod mounts.
func (p *Provider) markClaims(ctx context.Context, e *entry, pod *corev1.Pod, id string) {
	var names []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationPVCUsedBy + id: pod.Namespace + "/" + pod.Name}}})
		err := retryTransient(ctx, func() error {
			_, err := p.kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Patch(ctx, v.PersistentVolumeClaim.ClaimName, types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		})
		if err != nil {
			p.log.WithError(err).WithField("pvc", v.PersistentVolumeClaim.ClaimName).Warn("annotating the claim failed")
			continue
		}
		names = append(names, v.PersistentVolumeClaim.ClaimName)
	}
	p.mu.Lock()
	e.claimsMarked = names
	p.mu.Unlock()
}

// unmarkClaims removes what markClaims wrote.
func (p *Provider) unmarkClaims(ctx context.Context, e *entry, pod *corev1.Pod, id string) {
	p.mu.Lock()
	names := e.claimsMarked
	p.mu.Unlock()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationPVCUsedBy + id: nil}}})
	for _, n := range names {
		_, err := p.kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithField("pvc", n).Warn("removing the claim's instance annotation failed")
		}
	}
}

// retryTransient retries API-server writes that fail for passing reasons
// (conflicts, throttling, an API server restarting).
func retryTransient(ctx context.Context, f func() error) error {
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
	var last error
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(context.Context) (bool, error) {
		last = f()
		// Success, or an answer that retrying cannot change.
		done := last == nil || apierrors.IsNotFound(last) || apierrors.IsForbidden(last) || apierrors.IsInvalid(last)
		return done, nil
	})
	return last
}
