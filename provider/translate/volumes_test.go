package translate

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// mintAll mints every token the pod's volumes request, as the provider
// does before translating.
func mintAll(pod *corev1.Pod) Tokens {
	out := Tokens{}
	for _, r := range TokenRequests(pod) {
		out[r] = Token{Value: "tok-" + r.Audience, Expiry: time.Unix(1000+r.ExpirationSeconds, 0)}
	}
	return out
}

func TestVolumeFiles(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"a": "1"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "c"}}}}
	objs := objects()
	objs.cms["ns/bin"] = &corev1.ConfigMap{Data: map[string]string{"t": "text"}, BinaryData: map[string][]byte{"b": {0, 1, 2}}}
	mode := int32(0o400)
	exp := int64(7200)
	cases := []struct {
		name   string
		vol    corev1.Volume
		want   map[string]string
		reason string
	}{
		{name: "configmap all keys incl binary", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "bin"}}}},
			want: map[string]string{"t": "text", "b": "\x00\x01\x02"}},
		{name: "secret items", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", Items: []corev1.KeyToPath{{Key: "password", Path: "db/pw", Mode: &mode}}}}},
			want: map[string]string{"db/pw": "hunter2"}},
		{name: "missing optional secret", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "gone", Optional: ptr(true)}}},
			want: map[string]string{}},
		{name: "missing secret", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "gone"}}}, reason: "MissingSecret"},
		{name: "missing item key", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "Z", Path: "z"}}}}}, reason: "MissingVolumeKey"},
		{name: "escaping path", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "A", Path: "../etc/passwd"}}}}}, reason: "InvalidVolumePath"},
		{name: "downward api", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
			want: map[string]string{"labels": `a="1"`, "name": "p"}},
		{name: "downward api pod ip", vol: corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}}}, reason: "UnsupportedFieldPath"},
		{name: "projected with token", vol: corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "A", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
		}}}}, want: map[string]string{"token": "tok-vault", "ca.crt": "1", "namespace": "ns"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withVol := pod.DeepCopy()
			withVol.Spec.Volumes = []corev1.Volume{tc.vol}
			files, expiry, err := VolumeFiles(pod, &tc.vol, objs, mintAll(withVol))
			if tc.reason != "" {
				if u, ok := AsUnsupported(err); !ok || u.Reason != tc.reason {
					t.Fatalf("got %v, want reason %s", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, f := range files {
				got[f.Path] = string(f.Content)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("files %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if tc.vol.Projected != nil {
				if !expiry.Equal(time.Unix(8200, 0)) {
					t.Errorf("expiry %v, want the 7200 s token's", expiry)
				}
			}
			if tc.vol.Secret != nil && len(files) == 1 && files[0].Mode != 0o400 {
				t.Errorf("item mode %o", files[0].Mode)
			}
		})
	}
	// A token that was not minted is an error (retried by the provider),
	// not an unsupported pod.
	v := corev1.Volume{Name: "t", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}
	_, _, err := VolumeFiles(pod, &v, objs, Tokens{})
	if _, ok := AsUnsupported(err); err == nil || ok {
		t.Fatalf("missing token: %v", err)
	}
}

// Each distinct token a pod's volumes need is requested once, with the
// kubelet's default lifetime when the projection names none.
func TestTokenRequests(t *testing.T) {
	hour := int64(3600)
	day := int64(86400)
	vol := func(sources ...corev1.VolumeProjection) corev1.Volume {
		return corev1.Volume{VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}}}
	}
	tok := func(aud string, exp *int64) corev1.VolumeProjection {
		return corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: aud, ExpirationSeconds: exp, Path: "t"}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		vol(tok("", nil)), vol(tok("", &hour), tok("vault", &day)), {Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}}}
	got := TokenRequests(pod)
	want := []TokenRequest{{"", DefaultTokenExpiration}, {"vault", day}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("TokenRequests = %+v, want %+v", got, want)
	}
}
