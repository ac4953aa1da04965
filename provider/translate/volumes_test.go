package translate

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeTokens struct {
	got struct {
		audience string
		exp      int64
	}
	err error
}

func (f *fakeTokens) ServiceAccountToken(_ context.Context, pod *corev1.Pod, audience string, exp int64) (string, time.Time, error) {
	f.got.audience, f.got.exp = audience, exp
	return "tok-" + pod.Spec.ServiceAccountName, time.Unix(1000+exp, 0), f.err
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
		}}}}, want: map[string]string{"token": "tok-sa", "ca.crt": "1", "namespace": "ns"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tokens := &fakeTokens{}
			files, expiry, err := VolumeFiles(context.Background(), pod, &tc.vol, objs, tokens)
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
				if tokens.got.audience != "vault" || tokens.got.exp != 7200 || !expiry.Equal(time.Unix(8200, 0)) {
					t.Errorf("token request %+v expiry %v", tokens.got, expiry)
				}
			}
			if tc.vol.Secret != nil && len(files) == 1 && files[0].Mode != 0o400 {
				t.Errorf("item mode %o", files[0].Mode)
			}
		})
	}
	// A token error is an error (retried by the provider), not an unsupported pod.
	v := corev1.Volume{Name: "t", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}
	_, _, err := VolumeFiles(context.Background(), pod, &v, objs, &fakeTokens{err: errors.New("apiserver down")})
	if _, ok := AsUnsupported(err); err == nil || ok {
		t.Fatalf("token failure: %v", err)
	}
}
