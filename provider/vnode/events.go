package vnode

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
)

// vkSuccessReasons are the Normal events virtual-kubelet's pod controller
// records on every pod it hands to the provider (its reasons, which it
// does not export). They say only that a call into the provider returned:
// vnode's CreatePod and DeletePod queue the work and return at once, and
// the provider records what happened in ECI itself (ECIInstanceCreated,
// the instance's own events, or a warning). Each was one more
// kube-apiserver write per pod, two per pod's life.
var vkSuccessReasons = map[string]bool{
	"ProviderCreateSuccess": true,
	"ProviderUpdateSuccess": true,
	"ProviderDeleteSuccess": true,
}

// podControllerRecorder is the recorder given to virtual-kubelet's pod
// controller: its failure events pass, its success events are dropped.
type podControllerRecorder struct{ record.EventRecorder }

func (r podControllerRecorder) Event(obj runtime.Object, typ, reason, msg string) {
	if typ == corev1.EventTypeNormal && vkSuccessReasons[reason] {
		return
	}
	r.EventRecorder.Event(obj, typ, reason, msg)
}

func (r podControllerRecorder) Eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	r.Event(obj, typ, reason, fmt.Sprintf(format, args...))
}

func (r podControllerRecorder) AnnotatedEventf(obj runtime.Object, ann map[string]string, typ, reason, format string, args ...any) {
	if typ == corev1.EventTypeNormal && vkSuccessReasons[reason] {
		return
	}
	r.EventRecorder.AnnotatedEventf(obj, ann, typ, reason, format, args...)
}
