package translate

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/eci/model"
)

func TestPodStatus(t *testing.T) {
	pod := fullPod()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := &model.Instance{ID: "eci-1", Status: StatusRunning, IntranetIP: "192.168.0.7", Created: now,
		InitContainers: []model.ContainerStatus{{Name: "init", Current: model.ContainerState{State: "Terminated", ExitCode: 0, Finished: now}}},
		Containers: []model.ContainerStatus{
			{Name: "app", Ready: true, RestartCount: 2, Current: model.ContainerState{State: "Running", Started: now},
				Previous: model.ContainerState{State: "Terminated", ExitCode: 137, Reason: "OOMKilled"}},
			{Name: "side", Ready: true, Current: model.ContainerState{State: "Running", Started: now}},
		}}
	s := PodStatus(pod, inst)
	if s.Phase != corev1.PodRunning || s.PodIP != "192.168.0.7" || s.StartTime == nil {
		t.Fatalf("status %+v", s)
	}
	app := s.ContainerStatuses[0]
	if app.State.Running == nil || app.RestartCount != 2 || app.LastTerminationState.Terminated.Reason != "OOMKilled" || app.ContainerID != "eci://eci-1/app" || !*app.Started {
		t.Errorf("app status %+v", app)
	}
	ready := map[corev1.PodConditionType]corev1.ConditionStatus{}
	for _, c := range s.Conditions {
		ready[c.Type] = c.Status
	}
	if ready[corev1.PodReady] != corev1.ConditionTrue || ready[corev1.PodInitialized] != corev1.ConditionTrue {
		t.Errorf("conditions %v", ready)
	}

	inst.Containers[1].Ready = false
	s = PodStatus(pod, inst)
	for _, c := range s.Conditions {
		if c.Type == corev1.PodReady && c.Status != corev1.ConditionFalse {
			t.Error("pod ready with an unready container")
		}
	}

	for status, phase := range map[string]corev1.PodPhase{StatusScheduling: corev1.PodPending, StatusPending: corev1.PodPending, StatusRestarting: corev1.PodPending,
		StatusTerminating: corev1.PodRunning, StatusSucceeded: corev1.PodSucceeded, StatusFailed: corev1.PodFailed, StatusExpired: corev1.PodFailed, StatusScheduleFailed: corev1.PodFailed} {
		if got := Phase(status); got != phase {
			t.Errorf("Phase(%s) = %s, want %s", status, got, phase)
		}
	}
	exp := PodStatus(pod, &model.Instance{ID: "eci-2", Status: StatusExpired})
	if exp.Reason != "ECIInstanceExpired" || exp.ContainerStatuses[0].State.Waiting.Reason != "InstanceFailed" {
		t.Errorf("expired: %+v", exp)
	}
	done := PodStatus(pod, &model.Instance{ID: "eci-3", Status: StatusSucceeded, Containers: []model.ContainerStatus{{Name: "app", Current: model.ContainerState{State: "Terminated"}}}})
	if done.ContainerStatuses[0].State.Terminated.Reason != "Completed" {
		t.Errorf("completed container: %+v", done.ContainerStatuses[0].State)
	}
}
