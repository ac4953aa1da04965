package vnodectl

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func ds(spec corev1.PodSpec) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: spec}}}
}

var tolerateAll = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}

func term(exprs ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
	return corev1.NodeSelectorTerm{MatchExpressions: exprs}
}

func required(terms ...corev1.NodeSelectorTerm) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}
}

func TestLandsOnVirtualNode(t *testing.T) {
	linux := corev1.NodeSelectorRequirement{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}}
	for name, c := range map[string]struct {
		spec corev1.PodSpec
		want bool
	}{
		"kube-proxy: tolerates everything":   {corev1.PodSpec{Tolerations: tolerateAll}, true},
		"no toleration of the vnode taint":   {corev1.PodSpec{}, false},
		"tolerates, but excluded":            {corev1.PodSpec{Tolerations: tolerateAll, Affinity: required(term(excludeExpression))}, false},
		"tolerates, selector of linux nodes": {corev1.PodSpec{Tolerations: tolerateAll, NodeSelector: map[string]string{"kubernetes.io/os": "linux"}}, true},
		"tolerates, selector of other nodes": {corev1.PodSpec{Tolerations: tolerateAll, NodeSelector: map[string]string{"node-role": "gpu"}}, false},
		"one term of two excluded":           {corev1.PodSpec{Tolerations: tolerateAll, Affinity: required(term(excludeExpression), term(linux))}, true},
	} {
		if got := landsOnVirtualNode(ds(c.spec)); got != c.want {
			t.Errorf("%s: lands = %v, want %v", name, got, c.want)
		}
	}
}

func TestExcludeVirtualNodesIsIdempotentAndCoversEveryTerm(t *testing.T) {
	linux := corev1.NodeSelectorRequirement{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}}
	in := required(term(linux), term(excludeExpression))
	out, changed := excludeVirtualNodes(in)
	if !changed || len(in.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions) != 1 {
		t.Fatal("the input was modified or nothing changed")
	}
	if landsOnVirtualNode(ds(corev1.PodSpec{Tolerations: tolerateAll, Affinity: out})) {
		t.Fatal("still lands on a virtual node after exclusion")
	}
	if _, again := excludeVirtualNodes(out); again {
		t.Fatal("a second exclusion changed something")
	}
	if out, changed := excludeVirtualNodes(nil); !changed || landsOnVirtualNode(ds(corev1.PodSpec{Tolerations: tolerateAll, Affinity: out})) {
		t.Fatal("no affinity: not excluded")
	}
}
