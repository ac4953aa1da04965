package translate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCheckSupported(t *testing.T) {
	tr := true
	base := func() *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}}}}}
	}
	if err := CheckSupported(base()); err != nil {
		t.Fatalf("plain pod refused: %v", err)
	}
	cases := map[string]struct {
		mutate func(*corev1.Pod)
		reason string
	}{
		"hostNetwork": {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "HostNetworkNotSupported"},
		"hostPID":     {func(p *corev1.Pod) { p.Spec.HostPID = true }, "HostNamespaceNotSupported"},
		"hostPath": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var"}}}}
		}, "HostPathNotSupported"},
		"21 containers": {func(p *corev1.Pod) {
			for i := 0; i < 20; i++ {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x"})
			}
		}, "TooManyContainers"},
		"hostPort remap": {func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].HostPort = 8080 }, "HostPortNotSupported"},
		"privileged":     {func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &tr} }, "PrivilegedNotSupported"},
		"ephemeral": {func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg"}}}
		}, "EphemeralContainersNotSupported"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := base()
			tc.mutate(p)
			u, ok := AsUnsupported(CheckSupported(p))
			if !ok || u.Reason != tc.reason {
				t.Fatalf("got %v, want %s", u, tc.reason)
			}
		})
	}
}

func TestIsDaemonSetPod(t *testing.T) {
	tr := true
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "kube-proxy", Controller: &tr}}}}
	if !IsDaemonSetPod(p) {
		t.Error("DaemonSet pod not recognised")
	}
	p.OwnerReferences[0].Kind = "ReplicaSet"
	if IsDaemonSetPod(p) {
		t.Error("ReplicaSet pod taken for a DaemonSet's")
	}
}

func TestResolveClaim(t *testing.T) {
	bound := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
	pv := func(src corev1.PersistentVolumeSource) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: src}}
	}
	c, err := ResolveClaim("v", bound, pv(corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nas.example", Path: "/share"}}), true)
	if err != nil || c.NFS == nil || c.NFS.Server != "nas.example" || !c.NFS.ReadOnly {
		t.Errorf("nfs: %+v %v", c, err)
	}
	c, err = ResolveClaim("v", bound, pv(corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: CSIDriverNAS, VolumeAttributes: map[string]string{"server": "x.nas.aliyuncs.com", "path": "/k8s"}}}), false)
	if err != nil || c.NFS == nil || c.NFS.Path != "/k8s" {
		t.Errorf("nas: %+v %v", c, err)
	}
	c, err = ResolveClaim("v", bound, pv(corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: CSIDriverDisk, VolumeHandle: "d-123", FSType: "ext4"}}), false)
	if err != nil || c.Disk == nil || c.Disk.DiskID != "d-123" {
		t.Errorf("disk: %+v %v", c, err)
	}
	_, err = ResolveClaim("v", bound, pv(corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com"}}), false)
	if u, ok := AsUnsupported(err); !ok || u.Reason != "UnsupportedVolume" {
		t.Errorf("foreign CSI: %v", err)
	}
	pending := bound.DeepCopy()
	pending.Status.Phase = corev1.ClaimPending
	if _, err := ResolveClaim("v", pending, nil, false); err == nil {
		t.Error("pending claim resolved")
	} else if _, ok := AsUnsupported(err); ok {
		t.Error("a pending claim is temporary, not unsupported")
	}
}
