package translate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var testNode = NodeSettings{
	ClusterName: "c1", NodeName: "cn-hangzhou.vnd-1",
	VSwitchIDs: []string{"vsw-a", "vsw-b"}, SecurityGroupID: "sg-1", ResourceGroupID: "rg-1",
	Tags: map[string]string{"team": "blue"}, ClusterDNS: []string{"10.0.0.10"}, ClusterDomain: "cluster.local",
	// These tests are about parsing: the admin allows every guarded key
	// (allow_test.go tests the guard).
	AllowedAnnotations: GuardedAnnotations,
}

func fullPod() *corev1.Pod {
	grace := int64(20)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", UID: "0f6d-uid", Annotations: map[string]string{
			AnnotationSpotStrategy: "SpotAsPriceGo", AnnotationRAMRole: "reader", AnnotationImageCache: "true",
			AnnotationCustomTags: "cost:42,owner:me", AnnotationNTPServer: "ntp1, ntp2",
		}},
		Spec: corev1.PodSpec{
			NodeName: "cn-hangzhou.vnd-1", RestartPolicy: corev1.RestartPolicyOnFailure, TerminationGracePeriodSeconds: &grace,
			HostAliases: []corev1.HostAlias{{IP: "10.1.1.1", Hostnames: []string{"db"}}},
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox", Command: []string{"sh", "-c", "echo hi"},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}}}},
			Containers: []corev1.Container{
				{Name: "app", Image: "nginx:1.27", Command: []string{"nginx"}, Args: []string{"-g", "daemon off;", ""}, WorkingDir: "/srv",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
					Env:   []corev1.EnvVar{{Name: "MODE", Value: "prod"}, {Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
					VolumeMounts:   []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app", ReadOnly: true}, {Name: "scratch", MountPath: "/tmp", SubPath: "x"}},
					LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 5},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}}},
					StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}}, FailureThreshold: 30},
					Lifecycle:      &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}},
				},
				{Name: "side", Image: "busybox", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2.5Gi")}}},
			},
			Volumes: []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
				{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nas.example", Path: "/a"}}},
			},
		},
	}
}

func TestPod(t *testing.T) {
	g, err := Pod(fullPod(), testNode, Sources{Objects: objects()})
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "ns-web-1" || g.RestartPolicy != "OnFailure" || g.ClientToken != "vnode-0f6d-uid" {
		t.Errorf("identity: %s %s %s", g.Name, g.RestartPolicy, g.ClientToken)
	}
	// 0.5+1 vCPU / 1+2.5 GiB, init's 3 vCPU dominates: 3 vCPU / 3.5 GiB -> 4-4Gi.
	if g.CPU != 4 || g.MemoryGi != 4 {
		t.Errorf("size %v-%v, want 4-4", g.CPU, g.MemoryGi)
	}
	want := map[string]string{TagCluster: "c1", TagNode: "cn-hangzhou.vnd-1", TagNamespace: "ns", TagPod: "web-1", TagPodUID: "0f6d-uid", "team": "blue", "cost": "42", "owner": "me"}
	for k, v := range want {
		if g.Tags[k] != v {
			t.Errorf("tag %s=%q, want %q", k, g.Tags[k], v)
		}
	}
	app := g.Containers[0]
	if strings.Join(app.Args, "|") != "-g|daemon off;|" {
		t.Errorf("args lost: %q", app.Args)
	}
	if app.LivenessProbe.HTTPGet.Port != 80 || app.LivenessProbe.HTTPGet.Scheme != "HTTP" || app.ReadinessProbe.TCPSocket.Port != 80 || app.StartupProbe.Exec[1] != "/tmp/ready" {
		t.Errorf("probes %+v %+v %+v", app.LivenessProbe, app.ReadinessProbe, app.StartupProbe)
	}
	if app.PreStop == nil || strings.Join(app.PreStop.Exec, " ") != "sleep 5" {
		t.Errorf("preStop %+v", app.PreStop)
	}
	if len(app.Env) != 2 || app.Env[1].FieldPath != "status.podIP" || app.Ports[1].Protocol != "UDP" {
		t.Errorf("env %+v ports %+v", app.Env, app.Ports)
	}
	if len(g.Volumes) != 3 || g.Volumes[0].ConfigFiles == nil || g.Volumes[1].EmptyDir.Medium != "Memory" || g.Volumes[2].NFS.Server != "nas.example" {
		t.Errorf("volumes %+v", g.Volumes)
	}
	if g.SpotStrategy != "SpotAsPriceGo" || g.RAMRoleName != "reader" || !g.AutoMatchImageCache || len(g.NTPServers) != 2 {
		t.Errorf("annotations: %+v", g)
	}
	if g.DNS.Policy != "None" || g.DNS.Searches[0] != "ns.svc.cluster.local" {
		t.Errorf("dns %+v", g.DNS)
	}
	if strings.Join(g.VSwitchIDs, ",") != "vsw-a,vsw-b" || *g.TerminationGracePeriodSeconds != 20 {
		t.Errorf("placement %v %v", g.VSwitchIDs, g.TerminationGracePeriodSeconds)
	}
}

func TestPodSpecsAndRefusals(t *testing.T) {
	src := Sources{Objects: objects()}
	big := fullPod()
	big.Spec.InitContainers = nil
	big.Spec.Containers[1].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("70")
	_, err := Pod(big, testNode, src)
	if u, ok := AsUnsupported(err); !ok || u.Reason != "NoECISpec" || !strings.Contains(u.Message, "64-512Gi") {
		t.Fatalf("oversized: %v", err)
	}
	big.Annotations[AnnotationUseSpecs] = "ecs.c6.16xlarge, 64-128Gi"
	g, err := Pod(big, testNode, src)
	if err != nil || len(g.InstanceTypes) != 2 || g.CPU != 0 {
		t.Fatalf("with eci-use-specs: %v %+v", err, g)
	}

	cases := map[string]struct {
		mutate func(*corev1.Pod)
		reason string
	}{
		"gpu without type": {func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{gpuResource: resource.MustParse("1")}
		}, "GPUNeedsInstanceType"},
		"bad spot":           {func(p *corev1.Pod) { p.Annotations[AnnotationSpotStrategy] = "Cheap" }, "InvalidAnnotation"},
		"spot without limit": {func(p *corev1.Pod) { p.Annotations[AnnotationSpotStrategy] = "SpotWithPriceLimit" }, "InvalidAnnotation"},
		"bad vswitch":        {func(p *corev1.Pod) { p.Annotations[AnnotationVSwitch] = "subnet-1" }, "InvalidAnnotation"},
		"bad use-specs":      {func(p *corev1.Pod) { p.Annotations[AnnotationUseSpecs] = "huge" }, "InvalidAnnotation"},
		"unknown mount": {func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "nope", MountPath: "/x"})
		}, "UnknownVolume"},
		"unknown named port": {func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromString("metrics")
		}, "UnknownPort"},
		"grpc probe": {func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}}}
		}, "UnsupportedProbe"},
		"iscsi volume": {func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "i", VolumeSource: corev1.VolumeSource{ISCSI: &corev1.ISCSIVolumeSource{}}})
		}, "UnsupportedVolume"},
		"missing secret env": {func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}})
		}, "MissingSecret"},
		"hostNetwork": {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "HostNetworkNotSupported"},
		"sctp": {func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 9, Protocol: corev1.ProtocolSCTP}}
		}, "UnsupportedProtocol"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := fullPod()
			tc.mutate(p)
			_, err := Pod(p, testNode, src)
			if u, ok := AsUnsupported(err); !ok || u.Reason != tc.reason {
				t.Fatalf("got %v, want %s", err, tc.reason)
			}
		})
	}
}

// The instance's hostname is the pod's, as the kubelet gives it.
func TestHostName(t *testing.T) {
	for _, tc := range []struct{ name, hostname, want string }{
		{"web-0", "", "web-0"},
		{"web-0", "db", "db"},
		{strings.Repeat("a", 62) + "-b", "", strings.Repeat("a", 62)},
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: tc.name}, Spec: corev1.PodSpec{Hostname: tc.hostname}}
		if got := HostName(pod); got != tc.want {
			t.Errorf("HostName(%q, hostname %q) = %q, want %q", tc.name, tc.hostname, got, tc.want)
		}
	}
}

func TestGroupName(t *testing.T) {
	long := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "Team_A", Name: strings.Repeat("x", 200)}}
	n := GroupName(long)
	if len(n) > 128 || strings.ToLower(n) != n || strings.Contains(n, "_") {
		t.Fatalf("name %q (%d)", n, len(n))
	}
	other := long.DeepCopy()
	other.Name = strings.Repeat("x", 199) + "y"
	if GroupName(other) == n {
		t.Fatal("long names collide")
	}
}
