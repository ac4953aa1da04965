package approver

import (
	"context"
	"path"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
)

// testRBAC asks the authorizer what manifests/approver lets the approver's
// service account do: everything vnode-approver needs (the other subtests
// show it needs no more, by running it under this identity and finding no
// refusal in its log) and nothing beyond, above all no approval for any
// other signer and no way to issue certificates itself.
func testRBAC(ctx context.Context, t *testing.T, e *env) {
	user := "system:serviceaccount:" + approverNamespace + ":" + approverAccount
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + approverNamespace, "system:authenticated"}
	csrs := func(verb, sub string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Group: certificatesv1.GroupName, Resource: "certificatesigningrequests", Subresource: sub, Verb: verb}
	}
	signer := func(verb, name string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Group: certificatesv1.GroupName, Resource: "signers", Name: name, Verb: verb}
	}
	core := func(verb, resource, namespace string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Resource: resource, Namespace: namespace, Verb: verb}
	}
	lease := func(verb, namespace string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Namespace: namespace, Verb: verb}
	}
	cases := []struct {
		name  string
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		// Needed.
		{"list CSRs", csrs("list", ""), true},
		{"watch CSRs", csrs("watch", ""), true},
		{"get a CSR", csrs("get", ""), true},
		{"update CSR approval", csrs("update", "approval"), true},
		{"approve for kube-apiserver-client", signer("approve", certificatesv1.KubeAPIServerClientSignerName), true},
		{"approve for kubelet-serving (virtual nodes' kubelet APIs)", signer("approve", certificatesv1.KubeletServingSignerName), true},
		{"create SubjectAccessReviews", authorizationv1.ResourceAttributes{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"}, true},
		{"create TokenReviews", authorizationv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"}, true},
		{"list nodes", core("list", "nodes", ""), true},
		{"watch nodes", core("watch", "nodes", ""), true},
		{"list secrets in kube-system", core("list", "secrets", "kube-system"), true},
		{"watch secrets in kube-system", core("watch", "secrets", "kube-system"), true},
		{"create events in default", core("create", "events", metav1.NamespaceDefault), true},
		{"get its Lease", lease("get", approverNamespace), true},
		{"create its Lease", lease("create", approverNamespace), true},
		{"update its Lease", lease("update", approverNamespace), true},

		// Not needed, and dangerous.
		{"approve for kube-apiserver-client-kubelet", signer("approve", certificatesv1.KubeAPIServerClientKubeletSignerName), false},
		{"approve for kubernetes.io/* signers", signer("approve", "kubernetes.io/*"), false},
		{"approve for another domain's signer", signer("approve", "example.com/signer"), false},
		{"sign for kube-apiserver-client", signer("sign", certificatesv1.KubeAPIServerClientSignerName), false},
		{"update CSR status (issue certificates)", csrs("update", "status"), false},
		{"update CSRs", csrs("update", ""), false},
		{"create CSRs", csrs("create", ""), false},
		{"delete CSRs", csrs("delete", ""), false},
		{"get secrets in default", core("get", "secrets", metav1.NamespaceDefault), false},
		{"list secrets in every namespace", core("list", "secrets", ""), false},
		{"create secrets in kube-system", core("create", "secrets", "kube-system"), false},
		{"delete secrets in kube-system", core("delete", "secrets", "kube-system"), false},
		{"get nodes", core("get", "nodes", ""), false},
		{"update nodes", core("update", "nodes", ""), false},
		{"create pods", core("create", "pods", metav1.NamespaceDefault), false},
		{"create events in kube-system", core("create", "events", "kube-system"), false},
		{"update leases in kube-system", lease("update", "kube-system"), false},
		{"create service account tokens", authorizationv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Namespace: "kube-system", Verb: "create"}, false},
		{"impersonate users", authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate"}, false},
		{"bind cluster roles", authorizationv1.ResourceAttributes{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Verb: "bind"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attrs := c.attrs
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &attrs}}
			out, err := e.cp.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("SubjectAccessReview: %v", err)
			}
			if out.Status.Allowed != c.want {
				t.Fatalf("allowed = %v, want %v (%s)", out.Status.Allowed, c.want, out.Status.Reason)
			}
		})
	}
}

// testRulesExact lists, as the approver's service account, what it may do
// in each namespace it touches and in one it does not, and compares that
// with what vnode-approver uses: a rule added to manifests/approver fails
// here until this list says why it is needed.
func testRulesExact(ctx context.Context, t *testing.T, e *env) {
	client := clientFor(t, e.serviceAccountConfig(ctx, t, approverNamespace, approverAccount))
	clusterWide := []string{
		"get certificates.k8s.io/certificatesigningrequests", "list certificates.k8s.io/certificatesigningrequests", "watch certificates.k8s.io/certificatesigningrequests",
		"update certificates.k8s.io/certificatesigningrequests/approval",
		"approve certificates.k8s.io/signers/kubernetes.io/kube-apiserver-client",
		"approve certificates.k8s.io/signers/kubernetes.io/kubelet-serving",
		"create authorization.k8s.io/subjectaccessreviews",
		"create authentication.k8s.io/tokenreviews",
		"list nodes", "watch nodes",
	}
	events := []string{"create events", "patch events", "update events"}
	want := map[string][]string{
		"kube-system":     {"list secrets", "watch secrets"},
		"default":         events,
		approverNamespace: append([]string{"get coordination.k8s.io/leases", "create coordination.k8s.io/leases", "update coordination.k8s.io/leases"}, events...),
		"vnode-test-none": nil,
	}
	for ns, extra := range want {
		t.Run(ns, func(t *testing.T) {
			review, err := client.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("SelfSubjectRulesReview in %s: %v", ns, err)
			}
			if review.Status.Incomplete {
				t.Fatalf("the rules in %s are incomplete: %s", ns, review.Status.EvaluationError)
			}
			got := permissions(review.Status.ResourceRules)
			wantSet := sets.New(append(slices.Clone(clusterWide), extra...)...)
			if extra, missing := got.Difference(wantSet), wantSet.Difference(got); extra.Len() > 0 || missing.Len() > 0 {
				t.Fatalf("in namespace %s the approver may also %q and may not %q", ns, sets.List(extra), sets.List(missing))
			}
		})
	}
}

// everyone holds these (system:basic-user): reviews about oneself.
var everyone = sets.New(
	"create authorization.k8s.io/selfsubjectaccessreviews",
	"create authorization.k8s.io/selfsubjectrulesreviews",
	"create authentication.k8s.io/selfsubjectreviews",
)

// permissions flattens rules into "verb group/resource[/name]" strings
// (core group without a prefix), leaving out what every user may do.
func permissions(rules []authorizationv1.ResourceRule) sets.Set[string] {
	out := sets.New[string]()
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, v := range r.Verbs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, n := range names {
						p := path.Join(g, res, n)
						if s := v + " " + p; !everyone.Has(s) {
							out.Insert(s)
						}
					}
				}
			}
		}
	}
	return out
}
