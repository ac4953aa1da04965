package translate

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci/model"
)

// ECI container group statuses.
const (
	StatusScheduling     = "Scheduling"
	StatusPending        = "Pending"
	StatusRunning        = "Running"
	StatusSucceeded      = "Succeeded"
	StatusFailed         = "Failed"
	StatusExpired        = "Expired"
	StatusScheduleFailed = "ScheduleFailed"
	StatusRestarting     = "Restarting"
	StatusUpdating       = "Updating"
	StatusTerminating    = "Terminating"
)

// Phase maps an ECI status to a pod phase (Alibaba's lifecycle table).
func Phase(status string) corev1.PodPhase {
	switch status {
	case StatusRunning, StatusTerminating:
		return corev1.PodRunning
	case StatusSucceeded:
		return corev1.PodSucceeded
	case StatusFailed, StatusExpired, StatusScheduleFailed:
		return corev1.PodFailed
	}
	return corev1.PodPending
}

// IsFinal reports whether an instance will not change state any more.
func IsFinal(status string) bool {
	p := Phase(status)
	return p == corev1.PodSucceeded || p == corev1.PodFailed
}

// PodStatus is the status of pod as its instance reports it.
func PodStatus(pod *corev1.Pod, inst *model.Instance) corev1.PodStatus {
	phase := Phase(inst.Status)
	s := corev1.PodStatus{
		Phase:    phase,
		HostIP:   inst.IntranetIP,
		PodIP:    inst.IntranetIP,
		QOSClass: pod.Status.QOSClass,
	}
	if inst.IntranetIP != "" {
		s.PodIPs = []corev1.PodIP{{IP: inst.IntranetIP}}
		s.HostIPs = []corev1.HostIP{{IP: inst.IntranetIP}}
	}
	if !inst.Created.IsZero() {
		t := metav1.NewTime(inst.Created)
		s.StartTime = &t
	}
	switch inst.Status {
	case StatusExpired:
		s.Reason, s.Message = "ECIInstanceExpired", "the ECI instance was reclaimed (spot) or expired; its pod cannot run again"
	case StatusScheduleFailed:
		s.Reason, s.Message = "ECIScheduleFailed", "ECI could not find capacity for the instance"
		if e := lastWarning(inst); e != nil {
			s.Message += ": " + e.Message
		}
	case StatusFailed:
		s.Reason = "ECIInstanceFailed"
	}
	byName := func(list []model.ContainerStatus, name string) *model.ContainerStatus {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
		return nil
	}
	allInitDone, allReady := true, true
	for _, c := range pod.Spec.InitContainers {
		cs := containerStatus(inst, c, byName(inst.InitContainers, c.Name), phase)
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			allInitDone = false
		}
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
	}
	for _, c := range pod.Spec.Containers {
		cs := containerStatus(inst, c, byName(inst.Containers, c.Name), phase)
		allReady = allReady && cs.Ready
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	if phase == corev1.PodRunning || phase == corev1.PodSucceeded {
		allInitDone = true // ECI starts containers only after its init containers
	}
	ready := phase == corev1.PodRunning && allReady
	now := metav1.NewTime(time.Now())
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		st := corev1.ConditionFalse
		if ok {
			st, reason = corev1.ConditionTrue, ""
		}
		return corev1.PodCondition{Type: t, Status: st, Reason: reason, LastTransitionTime: keepTransition(pod, t, st, now)}
	}
	s.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true, ""),
		cond(corev1.PodReadyToStartContainers, inst.IntranetIP != "" || phase != corev1.PodPending, "InstancePending"),
		cond(corev1.PodInitialized, allInitDone, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
	}
	return s
}

// keepTransition keeps a condition's transition time while its status holds.
func keepTransition(pod *corev1.Pod, t corev1.PodConditionType, st corev1.ConditionStatus, now metav1.Time) metav1.Time {
	for _, c := range pod.Status.Conditions {
		if c.Type == t && c.Status == st && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime
		}
	}
	return now
}

func lastWarning(inst *model.Instance) *model.Event {
	var last *model.Event
	for i := range inst.Events {
		e := &inst.Events[i]
		if e.Type == corev1.EventTypeWarning && (last == nil || !e.Last.Before(last.Last)) {
			last = e
		}
	}
	return last
}

func containerStatus(inst *model.Instance, spec corev1.Container, c *model.ContainerStatus, phase corev1.PodPhase) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: spec.Name, Image: spec.Image}
	if c == nil {
		reason := "ContainerCreating"
		if phase == corev1.PodFailed {
			reason = "InstanceFailed"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		return cs
	}
	if c.Image != "" {
		cs.Image = c.Image
	}
	cs.ContainerID = "eci://" + inst.ID + "/" + c.Name
	cs.RestartCount = c.RestartCount
	cs.Ready = c.Ready
	cs.State = state(c.Current)
	if c.Previous.State != "" {
		if last := state(c.Previous); last.Terminated != nil {
			cs.LastTerminationState = last
		}
	}
	started := cs.State.Running != nil
	cs.Started = &started
	if cs.State.Running == nil {
		cs.Ready = false
	}
	return cs
}

func state(s model.ContainerState) corev1.ContainerState {
	t := func(v time.Time) metav1.Time { return metav1.NewTime(v) }
	switch s.State {
	case "Running":
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t(s.Started)}}
	case "Terminated", "Succeeded", "Failed", "Canceled":
		reason := s.Reason
		if reason == "" {
			reason = "Completed"
			if s.ExitCode != 0 || s.State == "Failed" {
				reason = "Error"
			}
		}
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: s.ExitCode, Signal: s.Signal, Reason: reason, Message: s.Message, StartedAt: t(s.Started), FinishedAt: t(s.Finished),
		}}
	}
	reason := s.Reason
	if reason == "" {
		reason = s.DetailStatus
	}
	if reason == "" {
		reason = "ContainerCreating"
	}
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: s.Message}}
}
