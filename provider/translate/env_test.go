package translate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vnode-project/vnode/eci/model"
)

// fakeObjects is an in-memory Objects for pure tests.
type fakeObjects struct {
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (f fakeObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f fakeObjects) Secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func objects() fakeObjects {
	return fakeObjects{
		cms:     map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"A": "1", "B": "2", "bad-name!": "x"}}},
		secrets: map[string]*corev1.Secret{"ns/sec": {Data: map[string][]byte{"password": []byte("hunter2")}}},
	}
}

func ptr[T any](v T) *T { return &v }

func TestResolveEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "vn", ServiceAccountName: "sa"}}
	c := &corev1.Container{
		Name: "main",
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CM_"},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "CM_A", Value: "override"},
			{Name: "GREETING", Value: "a=$(CM_A) b=$(CM_B) $$(CM_B) $(UNKNOWN)"},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "nope", Optional: ptr(true)}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "CPU_LIMIT_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
			{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_REQ_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.memory", Divisor: resource.MustParse("1Mi")}}},
		},
	}
	got, err := ResolveEnv(pod, c, objects(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]model.EnvVar{
		"CM_A":        {Name: "CM_A", Value: "override"},
		"CM_B":        {Name: "CM_B", Value: "2"},
		"GREETING":    {Name: "GREETING", Value: "a=override b=2 $(CM_B) $(UNKNOWN)"},
		"PW":          {Name: "PW", Value: "hunter2"},
		"POD_NAME":    {Name: "POD_NAME", Value: "p"},
		"APP":         {Name: "APP", Value: "web"},
		"NODE":        {Name: "NODE", Value: "vn"},
		"POD_IP":      {Name: "POD_IP", FieldPath: "status.podIP"},
		"HOST_IP":     {Name: "HOST_IP", FieldPath: "status.podIP"},
		"CPU_LIMIT_M": {Name: "CPU_LIMIT_M", Value: "1500"},
		"CPU_LIMIT":   {Name: "CPU_LIMIT", Value: "2"},
		"MEM_REQ_MI":  {Name: "MEM_REQ_MI", Value: "512"},
	}
	if len(got) != len(want) {
		t.Errorf("got %d vars %+v, want %d", len(got), got, len(want))
	}
	for _, v := range got {
		if w, ok := want[v.Name]; !ok || w != v {
			t.Errorf("%s = %+v, want %+v", v.Name, v, w)
		}
	}
	if got[0].Name != "CM_A" {
		t.Errorf("envFrom order not kept: %v", got[0])
	}
}

func TestResolveEnvErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	cases := map[string]struct {
		env    corev1.EnvVar
		from   *corev1.EnvFromSource
		reason string
	}{
		"missing secret":            {env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}}, reason: "MissingSecret"},
		"missing key":               {env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "Z"}}}, reason: "MissingConfigMapKey"},
		"missing envFrom configmap": {from: &corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}}, reason: "MissingConfigMap"},
		"bad field path":            {env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.hostname"}}}, reason: "UnsupportedFieldPath"},
		"bad resource":              {env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.hugepages-2Mi"}}}, reason: "UnsupportedResourceFieldRef"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &corev1.Container{Name: "c"}
			if tc.from != nil {
				c.EnvFrom = []corev1.EnvFromSource{*tc.from}
			} else {
				c.Env = []corev1.EnvVar{tc.env}
			}
			_, err := ResolveEnv(pod, c, objects(), nil)
			u, ok := AsUnsupported(err)
			if !ok || u.Reason != tc.reason {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatal("error leaks a secret value")
			}
		})
	}
}

// Missing configMaps, secrets and keys are noted with virtual-kubelet's
// event reasons: optional ones are skipped (only a note tells), mandatory
// ones also fail.
func TestResolveEnvNotesMissing(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	yes, no := true, false
	cmKey := func(name, key string, opt *bool) corev1.EnvVar {
		return corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: opt}}}
	}
	secretKey := func(name, key string, opt *bool) corev1.EnvVar {
		return corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: opt}}}
	}
	cases := map[string]struct {
		env    *corev1.EnvVar
		from   *corev1.EnvFromSource
		reason string
		fails  bool
	}{
		"optional configmap":  {env: ptr(cmKey("gone", "k", &yes)), reason: "OptionalConfigMapNotFound"},
		"optional secret":     {env: ptr(secretKey("gone", "k", &yes)), reason: "OptionalSecretNotFound"},
		"optional key":        {env: ptr(cmKey("cfg", "Z", &yes)), reason: "OptionalConfigMapKeyNotFound"},
		"mandatory configmap": {env: ptr(cmKey("gone", "k", &no)), reason: "MandatoryConfigMapNotFound", fails: true},
		"mandatory secret":    {env: ptr(secretKey("gone", "k", nil)), reason: "MandatorySecretNotFound", fails: true},
		"optional envFrom":    {from: &corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: &yes}}, reason: "OptionalSecretNotFound"},
		"mandatory envFrom":   {from: &corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}}, reason: "MandatoryConfigMapNotFound", fails: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &corev1.Container{Name: "c"}
			if tc.from != nil {
				c.EnvFrom = []corev1.EnvFromSource{*tc.from}
			} else {
				c.Env = []corev1.EnvVar{*tc.env}
			}
			var reasons []string
			_, err := ResolveEnv(pod, c, objects(), func(reason, msg string) { reasons = append(reasons, reason) })
			if (err != nil) != tc.fails {
				t.Fatalf("error %v, want failure %v", err, tc.fails)
			}
			if len(reasons) != 1 || reasons[0] != tc.reason {
				t.Fatalf("notes %v, want [%s]", reasons, tc.reason)
			}
		})
	}
}
