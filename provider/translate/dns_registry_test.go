package translate

import (
	"encoding/base64"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci/model"
)

func TestPodDNS(t *testing.T) {
	pod := func(policy corev1.DNSPolicy, cfg *corev1.PodDNSConfig) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web"}, Spec: corev1.PodSpec{DNSPolicy: policy, DNSConfig: cfg}}
	}
	d := PodDNS(pod("", nil), []string{"10.0.0.10"}, "cluster.local")
	if d.Policy != "None" || !reflect.DeepEqual(d.Nameservers, []string{"10.0.0.10"}) ||
		!reflect.DeepEqual(d.Searches, []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local"}) || *d.Options[0].Value != "5" {
		t.Errorf("ClusterFirst: %+v", d)
	}
	d = PodDNS(pod(corev1.DNSClusterFirst, nil), nil, "cluster.local")
	if d.Policy != "Default" || len(d.Nameservers) != 0 {
		t.Errorf("ClusterFirst without cluster DNS: %+v", d)
	}
	two := "2"
	d = PodDNS(pod(corev1.DNSClusterFirst, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "10.0.0.10"}, Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}), []string{"10.0.0.10"}, "cluster.local")
	if !reflect.DeepEqual(d.Nameservers, []string{"10.0.0.10", "1.1.1.1"}) || len(d.Searches) != 4 || *d.Options[0].Value != "2" || d.Options[1].Name != "edns0" {
		t.Errorf("merged: %+v", d)
	}
	d = PodDNS(pod(corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"a", "b", "c", "d"}}), []string{"10.0.0.10"}, "cluster.local")
	if d.Policy != "None" || len(d.Nameservers) != 3 || d.Nameservers[0] != "a" {
		t.Errorf("None: %+v", d)
	}
}

func TestRegistryCredentials(t *testing.T) {
	objs := objects()
	objs.secrets["ns/json"] = &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{
		corev1.DockerConfigJsonKey: []byte(`{"auths":{"https://registry.cn-hangzhou.aliyuncs.com/v2/":{"username":"u1","password":"p1"},"docker.io":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("u2:p:2")) + `"}}}`)}}
	objs.secrets["ns/cfg"] = &corev1.Secret{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{
		corev1.DockerConfigKey: []byte(`{"quay.io":{"username":"u3","password":"p3"}, "docker.io":{"username":"dup","password":"x"}}`)}}
	objs.secrets["ns/opaque"] = &corev1.Secret{Type: corev1.SecretTypeOpaque}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns"}, Spec: corev1.PodSpec{ImagePullSecrets: []corev1.LocalObjectReference{{Name: "json"}, {Name: "missing"}, {Name: "cfg"}}}}
	got, err := RegistryCredentials(pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.RegistryCredential{
		{Server: "docker.io", UserName: "u2", Password: "p:2"},
		{Server: "registry.cn-hangzhou.aliyuncs.com", UserName: "u1", Password: "p1"},
		{Server: "quay.io", UserName: "u3", Password: "p3"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v", got)
	}
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "opaque"}}
	if _, err := RegistryCredentials(pod, objs); err == nil {
		t.Error("opaque secret accepted as image pull secret")
	}
}
