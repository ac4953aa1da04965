package approver

import (
	"context"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

type policyCase struct {
	name   string
	csr    func(t *testing.T) *certificatesv1.CertificateSigningRequest
	facts  func(f *testFacts)
	policy Policy
	want   Verdict
	check  Check  // for Deny
	ignore string // for Ignore
	boot   bool   // for Approve: bootstrap rather than renewal
	serve  bool   // for Approve: a serving certificate
}

// testFacts is a cluster with token abcdef (vnode group, valid, allowed by
// RBAC), virtual node vn-existing, and real node worker-1.
type testFacts struct {
	access  *fakeAccess
	secrets fakeSecrets
	nodes   fakeNodes
	// registered: vn-existing (10.0.0.1, vn-existing.internal), worker-1.
	registered fakeRegistered
}

func newTestFacts() *testFacts {
	return &testFacts{
		access: &fakeAccess{allow: map[string]bool{bootstrapUserPrefix + "abcdef": true, bootstrapUserPrefix + "nogrp1": true}},
		secrets: fakeSecrets{secrets: map[string]*corev1.Secret{
			"kube-system/bootstrap-token-abcdef": tokenSecret("abcdef", nil),
			"kube-system/bootstrap-token-noexp1": tokenSecret("noexp1", func(s *corev1.Secret) { delete(s.Data, tokenExpirationKey) }),
			"kube-system/bootstrap-token-expird": tokenSecret("expird", func(s *corev1.Secret) {
				s.Data[tokenExpirationKey] = []byte(testNow.Add(-time.Second).Format(time.RFC3339))
			}),
			"kube-system/bootstrap-token-badexp": tokenSecret("badexp", func(s *corev1.Secret) { s.Data[tokenExpirationKey] = []byte("tomorrow") }),
			"kube-system/bootstrap-token-noauth": tokenSecret("noauth", func(s *corev1.Secret) { s.Data[tokenUsageAuthKey] = []byte("false") }),
			"kube-system/bootstrap-token-nogrp1": tokenSecret("nogrp1", func(s *corev1.Secret) { s.Data[tokenExtraGroupsKey] = []byte("system:bootstrappers:other") }),
			"kube-system/bootstrap-token-deling": tokenSecret("deling", func(s *corev1.Secret) { s.DeletionTimestamp = &metav1.Time{Time: testNow} }),
			"kube-system/bootstrap-token-opaque": tokenSecret("opaque", func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }),
			"kube-system/bootstrap-token-wrngid": tokenSecret("wrngid", func(s *corev1.Secret) { s.Data[tokenIDKey] = []byte("abcdef") }),
		}},
		nodes: fakeNodes{labels: map[string]map[string]string{
			"vn-existing": {identity.NodeTypeLabel: identity.NodeTypeVirtual},
			"vn-other":    {identity.NodeTypeLabel: identity.NodeTypeVirtual},
			"worker-1":    {"kubernetes.io/os": "linux"},
			"other-type":  {identity.NodeTypeLabel: "edge"},
		}},
		registered: fakeRegistered{nodes: map[string]*corev1.Node{
			"vn-existing": registeredNode("vn-existing", map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual},
				corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.1"},
				corev1.NodeAddress{Type: corev1.NodeInternalDNS, Address: "vn-existing.internal"}),
			"vn-other": registeredNode("vn-other", map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual},
				corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}),
			"worker-1": registeredNode("worker-1", map[string]string{"kubernetes.io/os": "linux"},
				corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.9"}),
		}},
	}
}

func registeredNode(name string, labels map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func (f *testFacts) facts() Facts {
	return Facts{Access: f.access, Secrets: f.secrets, Nodes: f.nodes, Registered: f.registered, Now: testNow}
}

// csrOf builds a CSR from a request, requestor and usages, with edits.
func csrOf(r request, u UserInfo, usages []certificatesv1.KeyUsage, edit ...func(*certificatesv1.CertificateSigningRequest)) func(t *testing.T) *certificatesv1.CertificateSigningRequest {
	return func(t *testing.T) *certificatesv1.CertificateSigningRequest {
		c := newCSR("csr-"+strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"), r.pem(t), u, usages)
		for _, e := range edit {
			e(c)
		}
		return c
	}
}

func withRequest(data []byte) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Request = data }
}

func withSigner(s string) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) { c.Spec.SignerName = s }
}

func withExpiration(d time.Duration) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) {
		s := int32(d / time.Second)
		c.Spec.ExpirationSeconds = &s
	}
}

func withCondition(t certificatesv1.RequestConditionType) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) {
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue})
	}
}

func TestEvaluate(t *testing.T) {
	boot := bootstrapUser("abcdef", identity.BootstrapGroup)
	vn1 := vnodeRequest("vn-1")
	longName := strings.Repeat("a", 250) + ".bcd" // 254 characters
	withKey := func(r request, k string) request { r.key = k; return r }

	cases := []policyCase{
		// Good: bootstrap and renewal, RSA, ECDSA and Ed25519, with and
		// without key encipherment.
		{name: "good/bootstrap ECDSA P-256", csr: csrOf(vn1, boot, usagesDSCA), want: Approve, boot: true},
		{name: "good/bootstrap RSA 2048 with key encipherment", csr: csrOf(withKey(vn1, "rsa2048"), boot, usagesDSKECA), want: Approve, boot: true},
		{name: "good/bootstrap ECDSA P-384 with key encipherment", csr: csrOf(withKey(vn1, "p384"), boot, usagesDSKECA), want: Approve, boot: true},
		{name: "good/bootstrap token without expiry", csr: csrOf(vn1, bootstrapUser("noexp1", identity.BootstrapGroup), usagesDSCA), facts: func(f *testFacts) { f.access.allow[bootstrapUserPrefix+"noexp1"] = true }, want: Approve, boot: true},
		{name: "good/bootstrap for an existing virtual node", csr: csrOf(vnodeRequest("vn-existing"), boot, usagesDSCA), want: Approve, boot: true},
		{name: "good/renewal ECDSA P-256", csr: csrOf(vn1, vnodeUser("vn-1"), usagesDSCA), want: Approve},
		{name: "good/renewal RSA 2048", csr: csrOf(withKey(vn1, "rsa2048"), vnodeUser("vn-1"), usagesDSCA), want: Approve},
		{name: "good/renewal Ed25519 with key encipherment", csr: csrOf(withKey(vn1, "ed25519"), vnodeUser("vn-1"), usagesDSKECA), want: Approve},
		{name: "good/renewal of a registered virtual node", csr: csrOf(vnodeRequest("vn-existing"), vnodeUser("vn-existing"), usagesDSKECA), want: Approve},
		{name: "good/expiration at the maximum", csr: csrOf(vn1, boot, usagesDSCA, withExpiration(24*time.Hour)), policy: Policy{MaxExpiration: 24 * time.Hour}, want: Approve, boot: true},
		{name: "good/custom bootstrap group", csr: csrOf(vn1, bootstrapUser("nogrp1", "system:bootstrappers:other"), usagesDSCA), policy: Policy{BootstrapGroup: "system:bootstrappers:other"}, want: Approve, boot: true},
		{name: "good/253-character node name", csr: csrOf(vnodeRequest(strings.Repeat("a", 249)+".bcd"), boot, usagesDSCA), want: Approve, boot: true},

		// Not ours: ignored, never denied.
		{name: "ignore/signer kube-apiserver-client-kubelet", csr: csrOf(vn1, boot, usagesDSCA, withSigner(certificatesv1.KubeAPIServerClientKubeletSignerName)), want: Ignore, ignore: IgnoreNotOurs},
		{name: "deny/client identity from the kubelet-serving signer", csr: csrOf(vn1, vnodeUser("vn-1"), usagesDSCA, withSigner(certificatesv1.KubeletServingSignerName)), want: Deny, check: CheckCommonName},
		{name: "ignore/signer example.com", csr: csrOf(vn1, boot, usagesDSCA, withSigner("example.com/x")), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/someone else's client cert", csr: csrOf(request{cn: "alice", org: []string{"dev"}}, UserInfo{Username: "alice", Groups: []string{"system:authenticated"}}, usagesDSCA), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/kubelet-shaped request from a plain bootstrapper", csr: csrOf(request{cn: "system:node:w1", org: []string{"system:nodes"}}, bootstrapUser("abcdef"), usagesDSKECA), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/unparseable request from a stranger", csr: csrOf(vn1, UserInfo{Username: "alice"}, usagesDSCA, withRequest([]byte("junk"))), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/already approved", csr: csrOf(vn1, boot, usagesDSCA, withCondition(certificatesv1.CertificateApproved)), want: Ignore, ignore: IgnoreAlreadyDecided},
		{name: "ignore/already denied", csr: csrOf(vn1, boot, usagesDSCA, withCondition(certificatesv1.CertificateDenied)), want: Ignore, ignore: IgnoreAlreadyDecided},
		{name: "ignore/already failed", csr: csrOf(vn1, boot, usagesDSCA, withCondition(certificatesv1.CertificateFailed)), want: Ignore, ignore: IgnoreAlreadyDecided},
		{name: "ignore/already issued", csr: csrOf(vn1, boot, usagesDSCA, func(c *certificatesv1.CertificateSigningRequest) { c.Status.Certificate = []byte("x") }), want: Ignore, ignore: IgnoreAlreadyDecided},

		// Common name.
		{name: "deny/CN system:node:x with O system:vnodes", csr: csrOf(request{cn: "system:node:x", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN system:node:x from a vnode bootstrap token", csr: csrOf(request{cn: "system:node:x", org: []string{"system:nodes"}}, boot, usagesDSKECA), want: Deny, check: CheckCommonName},
		{name: "deny/CN system:vnodefoo", csr: csrOf(request{cn: "system:vnodefoo", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN system:vnodes-x", csr: csrOf(request{cn: "system:vnodes-x", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN system:vnode", csr: csrOf(request{cn: "system:vnode", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN system:vnode: with no name", csr: csrOf(request{cn: "system:vnode:", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN uppercase", csr: csrOf(vnodeRequest("VN-1"), boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN too long", csr: csrOf(vnodeRequest(longName), boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN with a slash", csr: csrOf(vnodeRequest("a/b"), boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN with a space", csr: csrOf(vnodeRequest("a b"), boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN with NUL", csr: csrOf(vnodeRequest("a\x00b"), boot, usagesDSCA), want: Deny, check: CheckCommonName},
		{name: "deny/CN another user, O system:vnodes", csr: csrOf(request{cn: "admin", org: []string{identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckCommonName},

		// Organization.
		{name: "deny/O with system:masters too", csr: csrOf(request{cn: vn1.cn, org: []string{identity.VNodesGroup, "system:masters"}}, boot, usagesDSCA), want: Deny, check: CheckOrganization},
		{name: "deny/O system:masters", csr: csrOf(request{cn: vn1.cn, org: []string{"system:masters"}}, boot, usagesDSCA), want: Deny, check: CheckOrganization},
		{name: "deny/O missing", csr: csrOf(request{cn: vn1.cn}, boot, usagesDSCA), want: Deny, check: CheckOrganization},
		{name: "deny/O duplicated", csr: csrOf(request{cn: vn1.cn, org: []string{identity.VNodesGroup, identity.VNodesGroup}}, boot, usagesDSCA), want: Deny, check: CheckOrganization},
		{name: "deny/O extra group", csr: csrOf(request{cn: vn1.cn, org: []string{identity.VNodesGroup, "system:nodes"}}, vnodeUser("vn-1"), usagesDSCA), want: Deny, check: CheckOrganization},
		{name: "deny/O system:nodes", csr: csrOf(request{cn: vn1.cn, org: []string{"system:nodes"}}, vnodeUser("vn-1"), usagesDSCA), want: Deny, check: CheckOrganization},

		// SANs.
		{name: "deny/DNS SAN", csr: csrOf(request{cn: vn1.cn, org: vn1.org, dns: []string{"vn-1"}}, boot, usagesDSCA), want: Deny, check: CheckSANs},
		{name: "deny/IP SAN", csr: csrOf(request{cn: vn1.cn, org: vn1.org, ips: []net.IP{net.ParseIP("10.0.0.1")}}, boot, usagesDSCA), want: Deny, check: CheckSANs},
		{name: "deny/email SAN", csr: csrOf(request{cn: vn1.cn, org: vn1.org, emails: []string{"a@example.com"}}, boot, usagesDSCA), want: Deny, check: CheckSANs},
		{name: "deny/URI SAN", csr: csrOf(request{cn: vn1.cn, org: vn1.org, uris: []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/x"}}}, boot, usagesDSCA), want: Deny, check: CheckSANs},

		// Usages.
		{name: "deny/usage server auth added", csr: csrOf(vn1, boot, append(usagesDSKECA[:3:3], certificatesv1.UsageServerAuth)), want: Deny, check: CheckUsages},
		{name: "deny/usage cert sign added", csr: csrOf(vn1, boot, append(usagesDSCA[:2:2], certificatesv1.UsageCertSign)), want: Deny, check: CheckUsages},
		{name: "deny/usage client auth missing", csr: csrOf(vn1, boot, []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment}), want: Deny, check: CheckUsages},
		{name: "deny/usage digital signature missing", csr: csrOf(vn1, boot, []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}), want: Deny, check: CheckUsages},
		{name: "deny/usage server auth instead", csr: csrOf(vn1, vnodeUser("vn-1"), []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}), want: Deny, check: CheckUsages},
		{name: "deny/usage repeated", csr: csrOf(vn1, boot, []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth, certificatesv1.UsageClientAuth}), want: Deny, check: CheckUsages},

		// Requestor.
		{name: "deny/renewal by another virtual node", csr: csrOf(vn1, vnodeUser("vn-2"), usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/renewal by the CN without group system:vnodes", csr: csrOf(vn1, UserInfo{Username: vn1.cn, Groups: []string{"system:authenticated"}}, usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/plain user", csr: csrOf(vn1, UserInfo{Username: "alice", Groups: []string{"developers", "system:authenticated"}}, usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/service account", csr: csrOf(vn1, UserInfo{Username: "system:serviceaccount:default:builder", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"}}, usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/bootstrap token outside the vnode group", csr: csrOf(vn1, bootstrapUser("abcdef"), usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/bootstrap token in another group", csr: csrOf(vn1, bootstrapUser("abcdef", "system:bootstrappers:kubeadm:default-node-token"), usagesDSCA), want: Deny, check: CheckRequestor},
		{name: "deny/user named like a token in the vnode group", csr: csrOf(vn1, UserInfo{Username: "mallory", Groups: []string{identity.BootstrapGroup}}, usagesDSCA), want: Deny, check: CheckRequestor},

		// Bootstrap token Secret.
		{name: "deny/bootstrap token deleted", csr: csrOf(vn1, bootstrapUser("gone00", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken, boot: true},
		{name: "deny/bootstrap token expired", csr: csrOf(vn1, bootstrapUser("expird", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token expiry unparseable", csr: csrOf(vn1, bootstrapUser("badexp", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token not for authentication", csr: csrOf(vn1, bootstrapUser("noauth", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token Secret lost the vnode group", csr: csrOf(vn1, bootstrapUser("nogrp1", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token being deleted", csr: csrOf(vn1, bootstrapUser("deling", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token Secret of the wrong type", csr: csrOf(vn1, bootstrapUser("opaque", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/bootstrap token Secret for another id", csr: csrOf(vn1, bootstrapUser("wrngid", identity.BootstrapGroup), usagesDSCA), want: Deny, check: CheckToken},
		{name: "deny/access review says no", csr: csrOf(vn1, boot, usagesDSCA), facts: func(f *testFacts) { f.access.allow = nil }, want: Deny, check: CheckAccessReview},

		// Nodes.
		{name: "deny/CN names a real node", csr: csrOf(vnodeRequest("worker-1"), boot, usagesDSCA), want: Deny, check: CheckNode},
		{name: "deny/CN names a node of another type", csr: csrOf(vnodeRequest("other-type"), vnodeUser("other-type"), usagesDSCA), want: Deny, check: CheckNode},

		// The request itself.
		{name: "deny/malformed PEM from a vnode bootstrap token", csr: csrOf(vn1, boot, usagesDSCA, withRequest([]byte("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"))), want: Deny, check: CheckPEM},
		{name: "deny/no PEM from a virtual node", csr: csrOf(vn1, vnodeUser("vn-1"), usagesDSCA, withRequest([]byte("junk"))), want: Deny, check: CheckPEM},
		{name: "deny/two PEM blocks", csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
			c := csrOf(vn1, boot, usagesDSCA)(t)
			c.Spec.Request = append(c.Spec.Request, vnodeRequest("vn-2").pem(t)...)
			return c
		}, want: Deny, check: CheckPEM},
		{name: "deny/trailing data", csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
			c := csrOf(vn1, boot, usagesDSCA)(t)
			c.Spec.Request = append(c.Spec.Request, "trailing"...)
			return c
		}, want: Deny, check: CheckPEM},
		{name: "deny/PEM type CERTIFICATE", csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
			c := csrOf(vn1, boot, usagesDSCA)(t)
			b, _ := pem.Decode(c.Spec.Request)
			c.Spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
			return c
		}, want: Deny, check: CheckPEM},
		{name: "deny/PEM headers", csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
			c := csrOf(vn1, boot, usagesDSCA)(t)
			b, _ := pem.Decode(c.Spec.Request)
			b.Headers = map[string]string{"Proc-Type": "4,ENCRYPTED"}
			c.Spec.Request = pem.EncodeToMemory(b)
			return c
		}, want: Deny, check: CheckPEM},
		{name: "deny/signature does not verify", csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
			c := csrOf(vn1, boot, usagesDSCA)(t)
			b, _ := pem.Decode(c.Spec.Request)
			b.Bytes[len(b.Bytes)-3] ^= 0xff // inside the signature
			c.Spec.Request = pem.EncodeToMemory(b)
			return c
		}, want: Deny, check: CheckPEM},
		{name: "deny/RSA 1024", csr: csrOf(withKey(vn1, "rsa1024"), boot, usagesDSKECA), want: Deny, check: CheckKey},
		{name: "deny/ECDSA P-224", csr: csrOf(withKey(vn1, "p224"), boot, usagesDSCA), want: Deny, check: CheckKey},
		{name: "deny/expiration over policy", csr: csrOf(vn1, boot, usagesDSCA, withExpiration(24*time.Hour+time.Second)), policy: Policy{MaxExpiration: 24 * time.Hour}, want: Deny, check: CheckExpiration},
		{name: "deny/expiration over the default", csr: csrOf(vn1, vnodeUser("vn-1"), usagesDSCA, withExpiration(DefaultMaxExpiration+time.Second)), want: Deny, check: CheckExpiration},

		// Facts that could not be established: retry, never decide.
		{name: "retry/access review failed", csr: csrOf(vn1, boot, usagesDSCA), facts: func(f *testFacts) { f.access.err = errUnavailable }, want: Retry},
		{name: "retry/Secret lookup failed", csr: csrOf(vn1, boot, usagesDSCA), facts: func(f *testFacts) { f.secrets.err = errUnavailable }, want: Retry},
		{name: "retry/Node lookup failed", csr: csrOf(vn1, vnodeUser("vn-1"), usagesDSCA), facts: func(f *testFacts) { f.nodes.err = errUnavailable }, want: Retry},
	}

	if adversarial := runPolicyCases(t, cases); adversarial < 25 {
		t.Fatalf("only %d adversarial cases", adversarial)
	}
}

// runPolicyCases evaluates each case as a subtest and returns how many
// are not approvals.
func runPolicyCases(t *testing.T, cases []policyCase) int {
	t.Helper()
	adversarial := 0
	for _, tc := range cases {
		if tc.want != Approve {
			adversarial++
		}
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFacts()
			if tc.facts != nil {
				tc.facts(f)
			}
			csr := tc.csr(t)
			d := tc.policy.Evaluate(context.Background(), csr, f.facts())
			if d.Verdict != tc.want {
				t.Fatalf("verdict %s (check %q, ignore %q: %s, err %v), want %s", d.Verdict, d.Check, d.IgnoreReason, d.Message, d.Err, tc.want)
			}
			switch tc.want {
			case Deny:
				if d.Check != tc.check {
					t.Fatalf("denied by %q (%s), want %q", d.Check, d.Message, tc.check)
				}
				if d.Message == "" {
					t.Fatal("denial without a message")
				}
			case Ignore:
				if d.IgnoreReason != tc.ignore {
					t.Fatalf("ignored as %q, want %q", d.IgnoreReason, tc.ignore)
				}
			case Approve:
				if d.Bootstrap != tc.boot || d.Serving != tc.serve {
					t.Fatalf("bootstrap %v serving %v, want %v %v", d.Bootstrap, d.Serving, tc.boot, tc.serve)
				}
				// Bootstrap approvals must have asked RBAC; renewals need not.
				if asked := len(f.access.calls) > 0; asked != tc.boot {
					t.Fatalf("SubjectAccessReviews %q for a bootstrap=%v approval", f.access.calls, tc.boot)
				}
			case Retry:
				if d.Err == nil {
					t.Fatal("retry without an error")
				}
			}
			// Evaluate is repeatable: the same facts give the same answer.
			if again := tc.policy.Evaluate(context.Background(), csr, f.facts()); again.Verdict != d.Verdict || again.Check != d.Check || again.IgnoreReason != d.IgnoreReason {
				t.Fatalf("second evaluation %+v differs from the first %+v", again, d)
			}
		})
	}
	return adversarial
}

// The SubjectAccessReview carries the requestor exactly as recorded.
func TestBootstrapReviewsTheRecordedRequestor(t *testing.T) {
	f := newTestFacts()
	user := bootstrapUser("abcdef", identity.BootstrapGroup)
	var got UserInfo
	facts := f.facts()
	facts.Access = accessFunc(func(_ context.Context, u UserInfo, sub string) (bool, error) {
		got = u
		return sub == BootstrapSubresource, nil
	})
	user.UID = "u-1"
	user.Extra = map[string]certificatesv1.ExtraValue{"k": {"v"}}
	csr := newCSR("c", vnodeRequest("vn-1").pem(t), user, usagesDSCA)
	if d := (Policy{}).Evaluate(context.Background(), csr, facts); d.Verdict != Approve {
		t.Fatalf("verdict %s: %s", d.Verdict, d.Message)
	}
	if got.Username != user.Username || got.UID != "u-1" || len(got.Groups) != len(user.Groups) || got.Extra["k"][0] != "v" {
		t.Fatalf("reviewed %+v, want %+v", got, user)
	}
}

type accessFunc func(context.Context, UserInfo, string) (bool, error)

func (f accessFunc) CanCreate(ctx context.Context, u UserInfo, sub string) (bool, error) {
	return f(ctx, u, sub)
}

func TestConditionReason(t *testing.T) {
	for c, want := range map[Check]string{
		CheckCommonName:   "VNodeCommonName",
		CheckSANs:         "VNodeSubjectAltNames",
		CheckPEM:          "VNodePem",
		CheckNode:         "VNodeNodeNotVirtual",
		CheckAccessReview: "VNodeAccessReview",
	} {
		if got := c.ConditionReason(); got != want {
			t.Errorf("%s: %q, want %q", c, got, want)
		}
	}
}
