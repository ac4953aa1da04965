package provider

import (
	corev1 "k8s.io/api/core/v1"
)

// entry is what the provider knows of one pod. The provider's mu guards
// every field.
type entry struct {
	phase phase
	// pod is the pod's skeleton (see skeleton) with the status last
	// reported: what the provider reads once the instance exists.
	pod *corev1.Pod
	// full is the pod as given, kept only until its instance exists or it
	// is refused, and only when the provider has no pod lister to read it
	// from (see podToCreate): create translates it, retries included.
	full *corev1.Pod
	// instanceID is the pod's instance, once one exists (it may outlive
	// the pod's own phase: an ended instance is still deleted).
	instanceID string
	requestID  string
	// attempts counts create calls, for the first-failure event.
	attempts  int
	annotated bool // the size/zone annotations were added
	// unwritten are annotations of the create (instance and request id,
	// client token, version), added with the first sync's size and zone,
	// so that one status write carries them all.
	unwritten    map[string]string
	missed       int // consecutive lists the instance was absent from
	seenEvents   map[string]int32
	claimsMarked []string        // PVC names annotated with this instance
	noted        map[string]bool // translation notes already sent as events
}

// to moves e to next if the lifecycle allows it, and reports whether it
// did; a refused move is a bug, logged by the caller's context.
func (e *entry) to(next phase) bool {
	if !can(e.phase, next) {
		return false
	}
	e.phase = next
	return true
}

// listed reports whether the pod counts as running on the node (for
// virtual-kubelet's GetPods and the kubelet API's /runningpods): it holds
// an instance, or one is being made, and it is not being deleted.
func (e *entry) listed() bool {
	switch e.phase {
	case phaseCreating:
		return true
	case phaseRunning, phaseFinal, phaseDeleteFailed:
		return e.instanceID != ""
	}
	return false
}

// running reports whether the pod's instance is up, for stats.
func (e *entry) running() bool {
	switch e.phase {
	case phaseRunning, phaseDeleting, phaseDeleteFailed:
		return e.instanceID != ""
	}
	return false
}

func key(ns, name string) string { return ns + "/" + name }

// slim is a copy of pod without its managedFields: nothing here reads
// them, and at 10,000 pods the copies the provider holds and hands to
// virtual-kubelet would carry megabytes of them.
func slim(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	out.ManagedFields = nil
	return out
}

// skeleton is what the provider keeps of a pod once its instance exists:
// metadata, status, the restart policy, each container's name and image
// (statuses are built from them) and the claims it mounts. Pods reported
// to virtual-kubelet are skeletons too: it keeps a copy of each and
// writes it through pods/status, where the API server keeps the stored
// spec. A whole spec per pod, held twice more, was most of the provider's
// memory at 10,000 pods.
func skeleton(pod *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: pod.TypeMeta, ObjectMeta: *pod.ObjectMeta.DeepCopy(), Status: *pod.Status.DeepCopy()}
	out.ManagedFields = nil
	out.Spec.NodeName = pod.Spec.NodeName
	out.Spec.RestartPolicy = pod.Spec.RestartPolicy
	names := func(cs []corev1.Container) []corev1.Container {
		if len(cs) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image}
		}
		return out
	}
	out.Spec.InitContainers = names(pod.Spec.InitContainers)
	out.Spec.Containers = names(pod.Spec.Containers)
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim.DeepCopy()}})
		}
	}
	return out
}
