package translate

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

type namespaces map[string]map[string]string

func (n namespaces) Namespace(name string) (*corev1.Namespace, error) {
	a, ok := n[name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a}}, nil
}

// A pod author must not choose the instance's RAM role, security group,
// vSwitch, resource group or EIP unless the admin allowed that key, for the
// node or for the pod's namespace; values the node already uses pass.
func TestGuardedAnnotations(t *testing.T) {
	node := testNode
	node.AllowedAnnotations = nil
	allowAll := NamespaceAllowedAnnotations
	cases := []struct {
		name     string
		ann      map[string]string
		allowed  []string          // the node's allowed-pod-annotations
		ns       map[string]string // the namespace's annotations
		refused  []string          // keys the refusal must name; none: translated
		wantRAM  string
		wantVSW  string
		wantSG   string
		wantEIP  bool
		wantEIPI string
	}{
		{name: "no guarded annotation", wantVSW: "vsw-a,vsw-b", wantSG: "sg-1"},
		{name: "RAM role by default", ann: map[string]string{AnnotationRAMRole: "AdminRole"}, refused: []string{AnnotationRAMRole}},
		{name: "another security group", ann: map[string]string{AnnotationSecurityGroup: "sg-open"}, refused: []string{AnnotationSecurityGroup}},
		{name: "another vSwitch among the node's", ann: map[string]string{AnnotationVSwitch: "vsw-a,vsw-other"}, refused: []string{AnnotationVSwitch}},
		{name: "another resource group", ann: map[string]string{AnnotationResourceGroup: "rg-prod"}, refused: []string{AnnotationResourceGroup}},
		{name: "a public IP", ann: map[string]string{AnnotationWithEIP: "true", AnnotationEIPBandwidth: "100"}, refused: []string{AnnotationWithEIP, AnnotationEIPBandwidth}},
		{name: "someone's EIP", ann: map[string]string{AnnotationEIPInstanceID: "eip-123"}, refused: []string{AnnotationEIPInstanceID}},
		{name: "the node's own vSwitches, security group and resource group",
			ann:     map[string]string{AnnotationVSwitch: "vsw-b, vsw-a", AnnotationSecurityGroup: "sg-1", AnnotationResourceGroup: "rg-1", AnnotationWithEIP: "false"},
			wantVSW: "vsw-b,vsw-a", wantSG: "sg-1"},
		{name: "allowed by the node", ann: map[string]string{AnnotationRAMRole: "AppRole"}, allowed: []string{AnnotationRAMRole},
			wantRAM: "AppRole", wantVSW: "vsw-a,vsw-b", wantSG: "sg-1"},
		{name: "allowed by the namespace", ann: map[string]string{AnnotationRAMRole: "AppRole", AnnotationSecurityGroup: "sg-2"},
			ns: map[string]string{allowAll: "k8s.aliyun.com/eci-ram-role-name, k8s.aliyun.com/eci-security-group"}, wantRAM: "AppRole", wantVSW: "vsw-a,vsw-b", wantSG: "sg-2"},
		{name: "the namespace allows another key", ann: map[string]string{AnnotationRAMRole: "AppRole", AnnotationEIPInstanceID: "eip-1"},
			ns: map[string]string{allowAll: AnnotationRAMRole}, refused: []string{AnnotationEIPInstanceID}},
		{name: "node and namespace together", ann: map[string]string{AnnotationRAMRole: "AppRole", AnnotationEIPInstanceID: "eip-1"},
			allowed: []string{AnnotationEIPInstanceID}, ns: map[string]string{allowAll: AnnotationRAMRole}, wantRAM: "AppRole", wantEIPI: "eip-1", wantVSW: "vsw-a,vsw-b", wantSG: "sg-1"},
		{name: "another namespace's allowance does not count", ann: map[string]string{AnnotationRAMRole: "AppRole"},
			ns: map[string]string{"unrelated": AnnotationRAMRole}, refused: []string{AnnotationRAMRole}},
		{name: "a public IP asked and allowed", ann: map[string]string{AnnotationWithEIP: "true"}, allowed: []string{AnnotationWithEIP},
			wantEIP: true, wantVSW: "vsw-a,vsw-b", wantSG: "sg-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team", UID: "u1", Annotations: c.ann},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
			n := node
			n.AllowedAnnotations = c.allowed
			g, err := Pod(pod, n, Sources{Objects: objects(), Namespaces: namespaces{"team": c.ns}})
			if len(c.refused) > 0 {
				u, ok := AsUnsupported(err)
				if !ok || u.Reason != ReasonAnnotationNotAllowed {
					t.Fatalf("got %v, want %s", err, ReasonAnnotationNotAllowed)
				}
				for _, k := range c.refused {
					if !strings.Contains(u.Message, k) {
						t.Errorf("message does not name %s: %s", k, u.Message)
					}
				}
				// How to allow it, for this namespace.
				if !strings.Contains(u.Message, NamespaceAllowedAnnotations+"="+strings.Join(c.refused, ",")) || !strings.Contains(u.Message, "namespace team") ||
					!strings.Contains(u.Message, "allowed-pod-annotations in the node's config") {
					t.Errorf("message does not say how to allow it: %s", u.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.RAMRoleName != c.wantRAM || strings.Join(g.VSwitchIDs, ",") != c.wantVSW || g.SecurityGroupID != c.wantSG ||
				g.AutoCreateEIP != c.wantEIP || g.EIPInstanceID != c.wantEIPI {
				t.Errorf("group: role %q vswitches %v sg %q eip %v/%q", g.RAMRoleName, g.VSwitchIDs, g.SecurityGroupID, g.AutoCreateEIP, g.EIPInstanceID)
			}
		})
	}
}

// The namespace is read only when the node's settings do not decide, and a
// failed read is transient (retried), not a refusal.
func TestGuardedAnnotationsNamespaceRead(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "gone", UID: "u1", Annotations: map[string]string{AnnotationSecurityGroup: "sg-1"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	node := testNode
	node.AllowedAnnotations = nil
	if _, err := Pod(pod, node, Sources{Objects: objects(), Namespaces: namespaces{}}); err != nil {
		t.Fatalf("the node's own security group: %v", err)
	}
	pod.Annotations[AnnotationRAMRole] = "AppRole"
	_, err := Pod(pod, node, Sources{Objects: objects(), Namespaces: namespaces{}})
	if _, ok := AsUnsupported(err); ok || err == nil || !apierrors.IsNotFound(errors.Unwrap(err)) {
		t.Fatalf("unreadable namespace: %v, want a transient error", err)
	}
}

func TestCheckAllowList(t *testing.T) {
	if err := CheckAllowList([]string{AnnotationRAMRole, AnnotationEIPBandwidth}); err != nil {
		t.Fatal(err)
	}
	err := CheckAllowList([]string{AnnotationRAMRole, "k8s.aliyun.com/eci-ram-role"})
	if err == nil || !strings.Contains(err.Error(), `"k8s.aliyun.com/eci-ram-role"`) || !strings.Contains(err.Error(), "allowed-pod-annotations") {
		t.Fatalf("a misspelt key: %v", err)
	}
}
