package provider

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
)

// pendingStatus is the status of a pod whose instance does not run yet.
func pendingStatus(pod *corev1.Pod, waitReason string) corev1.PodStatus {
	now := metav1.Now()
	st := corev1.PodStatus{
		Phase:      corev1.PodPending,
		QOSClass:   pod.Status.QOSClass,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waitReason}}})
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waitReason}}})
	}
	return st
}

// terminatedStatus reports every container terminated after a delete,
// keeping a terminal state the instance already reported.
func terminatedStatus(last corev1.PodStatus) corev1.PodStatus {
	st := *last.DeepCopy()
	now := metav1.Now()
	if st.Phase != corev1.PodFailed {
		st.Phase = corev1.PodSucceeded
	}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
		for i := range list {
			cs := &list[i]
			if cs.State.Terminated != nil {
				continue
			}
			started := now
			if cs.State.Running != nil {
				started = cs.State.Running.StartedAt
			}
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "InstanceDeleted", Message: "the ECI instance was deleted", StartedAt: started, FinishedAt: now}}
			cs.Ready = false
		}
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady || st.Conditions[i].Type == corev1.ContainersReady {
			st.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	return st
}

// statusEqual compares what a pod status says, as the API server would
// keep it: conditions without their heartbeat times, times to the second,
// quantities by value, a nil list as an empty one. It was two deep copies
// and two JSON encodings a pod a poll.
func statusEqual(a, b corev1.PodStatus) bool { return statusSemantics.DeepEqual(a, b) }

// statusSemantics are statusEqual's rules; fixed once built.
var statusSemantics = conversion.EqualitiesOrDie(
	func(a, b corev1.PodCondition) bool {
		return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason &&
			a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
	},
	func(a, b metav1.Time) bool { return a.Unix() == b.Unix() },
	func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 },
)
