package profile

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseConfigMap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		wantErr string // substring; "" = valid
		rules   int
	}{
		{name: "empty", data: map[string]string{}},
		{name: "empty selectors", data: map[string]string{"selectors": ""}},
		{name: "two selectors", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchLabels":{"eci":"true"}}},{"name":"b","namespaceSelector":{"matchLabels":{"x":"y"}},"effect":{"annotations":{"k8s.aliyun.com/eci-use-specs":"2-4Gi"}}}]`}, rules: 2},
		{name: "matchExpressions", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchExpressions":[{"key":"eci","operator":"Exists"}]}}]`}, rules: 1},
		{name: "effect only", data: map[string]string{"selectors": `[{"name":"a","effect":{"labels":{"x":"y"}}}]`}, rules: 1},
		{name: "defaults", data: map[string]string{"vSwitchIds": "vsw-1,vsw-2", "securityGroupId": "sg-1", "enablePrivateZone": "false", "featureGates": "WaitForFirstConsumer=true"}},
		{name: "not JSON", data: map[string]string{"selectors": `[{"name":"a",}]`}, wantErr: "not a JSON array"},
		{name: "object not array", data: map[string]string{"selectors": `{"name":"a"}`}, wantErr: "not a JSON array"},
		{name: "trailing data", data: map[string]string{"selectors": `[] []`}, wantErr: "trailing"},
		{name: "unknown field", data: map[string]string{"selectors": `[{"name":"a","objectSelectors":{"matchLabels":{"a":"b"}}}]`}, wantErr: "unknown field"},
		{name: "no name", data: map[string]string{"selectors": `[{"objectSelector":{"matchLabels":{"a":"b"}}}]`}, wantErr: "name is required"},
		{name: "duplicate name", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchLabels":{"a":"b"}}},{"name":"a","objectSelector":{"matchLabels":{"a":"c"}}}]`}, wantErr: "used twice"},
		{name: "bad operator", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchExpressions":[{"key":"a","operator":"Near"}]}}]`}, wantErr: "object selector"},
		{name: "bad label value", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchLabels":{"a":"b c"}}}]`}, wantErr: "object selector"},
		{name: "bad effect label", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchLabels":{"a":"b"}},"effect":{"labels":{"x":"has space"}}}]`}, wantErr: "effect label"},
		{name: "bad effect annotation key", data: map[string]string{"selectors": `[{"name":"a","objectSelector":{"matchLabels":{"a":"b"}},"effect":{"annotations":{"-bad":"v"}}}]`}, wantErr: "effect annotation"},
		{name: "does nothing", data: map[string]string{"selectors": `[{"name":"a"}]`}, wantErr: "do nothing"},
		{name: "bad vswitch", data: map[string]string{"vSwitchIds": "subnet-1"}, wantErr: "vSwitch"},
		{name: "bad security group", data: map[string]string{"securityGroupId": "grp"}, wantErr: "security group"},
		{name: "bad bool", data: map[string]string{"enablePrivateZone": "yes"}, wantErr: "true or false"},
		{name: "bad feature gate", data: map[string]string{"featureGates": "WaitForFirstConsumer"}, wantErr: "Name=true|false"},
		{name: "unknown key", data: map[string]string{"vswitchId": "vsw-1"}, wantErr: `unknown key "vswitchId"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseConfigMap(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Selectors) != tc.rules {
				t.Fatalf("%d selectors, want %d", len(p.Selectors), tc.rules)
			}
		})
	}
	p, err := ParseConfigMap(map[string]string{"vswitchIds": "vsw-1", "securityGroupId": "sg-1", "vpcId": "vpc-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"k8s.aliyun.com/eci-vswitch": "vsw-1", "k8s.aliyun.com/eci-security-group": "sg-1"}
	if !reflect.DeepEqual(p.Defaults, want) {
		t.Fatalf("defaults %v, want %v", p.Defaults, want)
	}
}

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		policy  Policy
		wantErr string
	}{
		{name: "default policy", json: `{"metadata":{"name":"s"},"spec":{"objectLabels":{"matchLabels":{"a":"b"}}}}`, policy: VirtualNodeOnly},
		{name: "fair", json: `{"metadata":{"name":"s"},"spec":{"policy":{"fair":{}}}}`, policy: Fair},
		{name: "normalNodeOnly", json: `{"metadata":{"name":"s"},"spec":{"policy":{"normalNodeOnly":{}}}}`, policy: NormalNodeOnly},
		{name: "normalNodePrefer", json: `{"metadata":{"name":"s"},"spec":{"policy":{"normalNodePrefer":{}}}}`, policy: NormalNodePrefer},
		{name: "ratios refused", json: `{"metadata":{"name":"s"},"spec":{"policy":{"normalNodePrefer":{"cpuRatio":2}}}}`, wantErr: "cpuRatio"},
		{name: "namespace limit refused", json: `{"metadata":{"name":"s"},"spec":{"policy":{"namespaceResourceLimit":{"namespace":"a"}}}}`, wantErr: "namespaceResourceLimit"},
		{name: "two policies", json: `{"metadata":{"name":"s"},"spec":{"policy":{"fair":{},"normalNodeOnly":{}}}}`, wantErr: "at most one"},
		{name: "misspelt policy", json: `{"metadata":{"name":"s"},"spec":{"policy":{"virtualNodeOnlyy":{}}}}`, wantErr: "unknown field"},
		{name: "bad selector", json: `{"metadata":{"name":"s"},"spec":{"namespaceLabels":{"matchExpressions":[{"key":"a","operator":"In"}]}}}`, wantErr: "namespace selector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := DecodeSelector([]byte(tc.json))
			var r Rule
			if err == nil {
				r, err = ParseSelector(s)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Policy != tc.policy {
				t.Fatalf("policy %q, want %q", r.Policy, tc.policy)
			}
		})
	}
}

func mustProfile(t *testing.T, selectors string, defaults map[string]string) *Profile {
	t.Helper()
	data := map[string]string{"selectors": selectors}
	for k, v := range defaults {
		data[k] = v
	}
	p, err := ParseConfigMap(data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRule(t *testing.T, name string, prio int32, policy string, obj map[string]string, ann map[string]string) Rule {
	t.Helper()
	s := &Selector{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: SelectorSpec{Priority: &prio,
		ObjectLabels: &metav1.LabelSelector{MatchLabels: obj}, Effect: &Effect{Annotations: ann}}}
	if policy != "" {
		b, _ := json.Marshal(map[string]any{policy: map[string]any{}})
		s.Spec.Policy = &SelectorPolicy{}
		if err := json.Unmarshal(b, s.Spec.Policy); err != nil {
			t.Fatal(err)
		}
	}
	r, err := ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDecideAndApply(t *testing.T) {
	cm := mustProfile(t, `[
		{"name":"ns","namespaceSelector":{"matchLabels":{"eci":"true"}},"effect":{"annotations":{"k8s.aliyun.com/eci-use-specs":"2-4Gi","from":"ns"}}},
		{"name":"obj","objectSelector":{"matchLabels":{"app":"web"}},"effect":{"annotations":{"from":"obj","second":"obj"},"labels":{"added":"yes"}}},
		{"name":"both","namespaceSelector":{"matchLabels":{"eci":"true"}},"objectSelector":{"matchLabels":{"tier":"x"}},"effect":{"annotations":{"both":"1"}}},
		{"name":"all-eci","effect":{"annotations":{"everyone":"1"}}}
	]`, map[string]string{"vSwitchIds": "vsw-1"})
	eciNS := map[string]string{"eci": "true"}

	t.Run("nothing matches: untouched", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}}}
		d := NewSet(nil, cm).Decide(map[string]string{}, pod)
		if d.Apply(pod) || pod.Annotations != nil || pod.Spec.NodeSelector != nil || pod.Spec.Tolerations != nil {
			t.Fatalf("pod changed: %+v", pod)
		}
	})
	t.Run("every ConfigMap match in order, add-only, pod wins", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "y"},
			Annotations: map[string]string{"k8s.aliyun.com/eci-use-specs": "ecs.c6.large"}}}
		d := NewSet(nil, cm).Decide(eciNS, pod)
		if !d.Apply(pod) {
			t.Fatal("nothing changed")
		}
		want := map[string]string{"k8s.aliyun.com/eci-use-specs": "ecs.c6.large", "from": "ns", "second": "obj", "everyone": "1", "k8s.aliyun.com/eci-vswitch": "vsw-1"}
		if !reflect.DeepEqual(pod.Annotations, want) {
			t.Fatalf("annotations %v, want %v", pod.Annotations, want)
		}
		if pod.Labels["added"] != "yes" || pod.Spec.NodeSelector["type"] != "virtual-kubelet" || len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0].Key != "virtual-kubelet.io/provider" {
			t.Fatalf("pod %+v", pod)
		}
		if d.Apply(pod) {
			t.Fatal("a second Apply changed the pod again: not idempotent")
		}
	})
	t.Run("a selector with namespace and object selectors needs both", func(t *testing.T) {
		for _, tc := range []struct {
			ns   map[string]string
			tier string
			want bool
		}{{eciNS, "x", true}, {eciNS, "y", false}, {map[string]string{}, "x", false}} {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"tier": tc.tier}}}
			NewSet(nil, cm).Decide(tc.ns, pod).Apply(pod)
			if got := pod.Annotations["both"] == "1"; got != tc.want {
				t.Errorf("namespace %v tier %s: matched %t, want %t", tc.ns, tc.tier, got, tc.want)
			}
		}
	})
	t.Run("pod's own nodeSelector and toleration win", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"type": "edge"}, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}
		NewSet(nil, cm).Decide(nil, pod).Apply(pod)
		if pod.Spec.NodeSelector["type"] != "edge" || len(pod.Spec.Tolerations) != 1 {
			t.Fatalf("pod's own values overwritten: %+v", pod.Spec)
		}
	})
	t.Run("Selector winner: highest priority, ties by name, whatever the order", func(t *testing.T) {
		web := map[string]string{"app": "web"}
		rules := []Rule{
			mustRule(t, "zeta", 5, "fair", web, map[string]string{"winner": "zeta"}),
			mustRule(t, "alpha", 5, "normalNodeOnly", web, map[string]string{"winner": "alpha"}),
			mustRule(t, "low", 1, "", web, map[string]string{"winner": "low"}),
		}
		for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
			var rs []Rule
			for _, i := range order {
				rs = append(rs, rules[i])
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: web}}
			d := NewSet(rs, cm).Decide(nil, pod)
			d.Apply(pod)
			if d.Policy != NormalNodeOnly || pod.Annotations["winner"] != "alpha" {
				t.Fatalf("order %v: policy %q winner %q", order, d.Policy, pod.Annotations["winner"])
			}
			// The ConfigMap's "obj" adds after the winner, but no placement
			// of its own, and no defaults for a pod kept off virtual nodes.
			if pod.Spec.NodeSelector != nil || pod.Annotations["second"] != "obj" || pod.Annotations["k8s.aliyun.com/eci-vswitch"] != "" {
				t.Fatalf("order %v: pod %+v", order, pod)
			}
			req := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0]
			if req.Key != "type" || req.Operator != corev1.NodeSelectorOpNotIn || req.Values[0] != "virtual-kubelet" {
				t.Fatalf("affinity %+v", req)
			}
		}
	})
	t.Run("policies", func(t *testing.T) {
		web := map[string]string{"app": "web"}
		for policy, check := range map[string]func(*corev1.Pod) bool{
			"virtualNodeOnly": func(p *corev1.Pod) bool {
				return p.Spec.NodeSelector["type"] == "virtual-kubelet" && len(p.Spec.Tolerations) == 1 && p.Spec.Affinity == nil
			},
			"normalNodeOnly": func(p *corev1.Pod) bool {
				return p.Spec.NodeSelector == nil && len(p.Spec.Tolerations) == 0 && p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil
			},
			"normalNodePrefer": func(p *corev1.Pod) bool {
				na := p.Spec.Affinity.NodeAffinity
				return p.Spec.NodeSelector == nil && len(p.Spec.Tolerations) == 1 && na.RequiredDuringSchedulingIgnoredDuringExecution == nil && len(na.PreferredDuringSchedulingIgnoredDuringExecution) == 1
			},
			"fair": func(p *corev1.Pod) bool {
				return p.Spec.NodeSelector == nil && len(p.Spec.Tolerations) == 1 && p.Spec.Affinity == nil
			},
		} {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: web}}
			NewSet([]Rule{mustRule(t, "s", 0, policy, web, nil)}, nil).Decide(nil, pod).Apply(pod)
			if !check(pod) {
				t.Errorf("%s: pod spec %+v", policy, pod.Spec)
			}
			// Defaults go to every pod that may run on a virtual node.
			pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: web}}
			NewSet([]Rule{mustRule(t, "s", 0, policy, web, nil)}, cm).Decide(nil, pod).Apply(pod)
			if got, want := pod.Annotations["k8s.aliyun.com/eci-vswitch"] != "", policy != "normalNodeOnly"; got != want {
				t.Errorf("%s: defaults applied %t, want %t", policy, got, want)
			}
		}
	})
}

func TestPatch(t *testing.T) {
	orig := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}
	if b, err := Patch(orig, orig.DeepCopy()); err != nil || b != nil {
		t.Fatalf("unchanged pod: patch %s, %v", b, err)
	}
	m := orig.DeepCopy()
	m.Annotations = map[string]string{"x": "y"}
	m.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
	b, err := Patch(orig, m)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"add","path":"/metadata/annotations","value":{"x":"y"}},{"op":"add","path":"/spec/nodeSelector","value":{"type":"virtual-kubelet"}}]`
	if string(b) != want {
		t.Fatalf("patch %s\nwant  %s", b, want)
	}
}
