package provider

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// annotate merges annotations into the pod's metadata, and into the cached
// pod: virtual-kubelet writes the cached pod through pods/status, whose
// metadata the API server keeps, so a stale cache would erase them. Then,
// written or not, the pod's status is queued for virtual-kubelet.
func (p *Provider) annotate(ctx context.Context, e *entry, kv map[string]string) {
	for k, v := range kv {
		if v == "" {
			delete(kv, k)
		}
	}
	p.mu.Lock()
	ns, name := e.pod.Namespace, e.pod.Name
	p.mu.Unlock()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": kv}})
	err := retryTransient(ctx, func() error {
		_, err := p.kube.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		if !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithFields(logrus.Fields{"namespace": ns, "pod": name}).Warn("writing ECI annotations on the pod failed")
		}
		// The status learnt with them still goes out.
		p.mu.Lock()
		p.changed(e)
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	ann := make(map[string]string, len(e.pod.Annotations)+len(kv))
	for k, v := range e.pod.Annotations {
		ann[k] = v
	}
	for k, v := range kv {
		ann[k] = v
	}
	e.pod.Annotations = ann
	// The last notification virtual-kubelet writes must carry them.
	p.changed(e)
	p.mu.Unlock()
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
