package provider

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusEqual tells apart what the API server would keep apart, and
// nothing else: heartbeat times, sub-second digits, a nil list against an
// empty one and a quantity's spelling are not changes.
func TestStatusEqual(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	base := func() corev1.PodStatus {
		started := metav1.NewTime(at)
		return corev1.PodStatus{
			Phase:     corev1.PodRunning,
			PodIP:     "192.168.1.5",
			StartTime: &started,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "c", Ready: true,
				State:              corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(at)}},
				AllocatedResources: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}},
		}
	}
	same := map[string]func(*corev1.PodStatus){
		"a condition's transition time": func(s *corev1.PodStatus) {
			s.Conditions[0].LastTransitionTime = metav1.NewTime(at.Add(time.Hour))
			s.Conditions[0].LastProbeTime = metav1.NewTime(at)
		},
		"sub-second digits": func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].State.Running.StartedAt = metav1.NewTime(at.Add(300 * time.Millisecond))
		},
		"an empty list for nil": func(s *corev1.PodStatus) { s.InitContainerStatuses = []corev1.ContainerStatus{} },
		"a quantity's spelling": func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].AllocatedResources[corev1.ResourceCPU] = resource.MustParse("1000m")
		},
	}
	for name, change := range same {
		s := base()
		change(&s)
		if !statusEqual(base(), s) {
			t.Errorf("%s counted as a change", name)
		}
	}
	differs := map[string]func(*corev1.PodStatus){
		"the phase":            func(s *corev1.PodStatus) { s.Phase = corev1.PodFailed },
		"a condition's status": func(s *corev1.PodStatus) { s.Conditions[0].Status = corev1.ConditionFalse },
		"a condition's reason": func(s *corev1.PodStatus) { s.Conditions[0].Reason = "ContainersNotReady" },
		"a condition more": func(s *corev1.PodStatus) {
			s.Conditions = append(s.Conditions, corev1.PodCondition{Type: corev1.PodScheduled})
		},
		"a second later": func(s *corev1.PodStatus) { s.StartTime = &metav1.Time{Time: at.Add(time.Second)} },
		"no start time":  func(s *corev1.PodStatus) { s.StartTime = nil },
		"a container's state": func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
		},
		"a container's ready": func(s *corev1.PodStatus) { s.ContainerStatuses[0].Ready = false },
		"a quantity's value": func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].AllocatedResources[corev1.ResourceCPU] = resource.MustParse("2")
		},
		"the IP":                func(s *corev1.PodStatus) { s.PodIP = "" },
		"a restart":             func(s *corev1.PodStatus) { s.ContainerStatuses[0].RestartCount = 1 },
		"a pointer to false":    func(s *corev1.PodStatus) { f := false; s.ContainerStatuses[0].Started = &f },
		"a container's message": func(s *corev1.PodStatus) { s.Message = "evicted" },
	}
	for name, change := range differs {
		s := base()
		change(&s)
		if statusEqual(base(), s) {
			t.Errorf("%s went unseen", name)
		}
	}
}
