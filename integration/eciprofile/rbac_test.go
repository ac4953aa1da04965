package eciprofile

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// TestRBACLeastPrivilege asks the API server what the shipped RBAC lets
// eci-profile's service account do: what it needs, and nothing next to it
// (other Secrets, other webhook configurations, other ConfigMaps, pods).
func TestRBACLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	e := newEnv(ctx, t, controlplane.Options{WithoutScheduler: true})
	user := "system:serviceaccount:" + ownNamespace + ":" + account
	for _, tc := range []struct {
		allowed                       bool
		verb, group, resource, ns, nm string
	}{
		{true, "get", "", "configmaps", "kube-system", "eci-profile"},
		{true, "watch", "", "configmaps", "kube-system", "eci-profile"},
		{true, "update", "", "secrets", ownNamespace, "eci-profile-tls"},
		{true, "create", "", "secrets", ownNamespace, ""},
		{true, "update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "eci-profile"},
		{true, "list", "eci.aliyun.com", "selectors", "", ""},
		{true, "list", "", "namespaces", "", ""},
		{true, "create", "", "events", "default", ""},

		{false, "list", "", "configmaps", "kube-system", ""},
		{false, "get", "", "configmaps", "kube-system", "kubeadm-config"},
		{false, "get", "", "secrets", ownNamespace, "other"},
		{false, "list", "", "secrets", ownNamespace, ""},
		{false, "get", "", "secrets", "kube-system", "eci-profile-tls"},
		{false, "create", "", "secrets", "kube-system", ""},
		{false, "update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "other"},
		{false, "update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "eci-profile"},
		{false, "update", "eci.aliyun.com", "selectors", "", "x"},
		{false, "create", "", "pods", "default", ""},
		{false, "create", "", "events", "apps", ""},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ownNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: tc.verb, Group: tc.group, Resource: tc.resource, Namespace: tc.ns, Name: tc.nm}}}
		got, err := e.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != tc.allowed {
			t.Errorf("%s %s/%s %s in %q: allowed %t, want %t", tc.verb, tc.group, tc.resource, tc.nm, tc.ns, got.Status.Allowed, tc.allowed)
		}
	}
}
