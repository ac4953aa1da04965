package approver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	vnapprover "github.com/vnode-project/vnode/approver"
	"github.com/vnode-project/vnode/internal/identity"
)

// outcome is what must become of a CSR.
type outcome int

const (
	approved outcome = iota // approved by vnode-approver, then signed
	denied                  // denied, the condition reason naming the failed check
	ignored                 // our signer but not ours: looked at and left pending
	pending                 // another signer: never looked at, left pending
	refused                 // the API server refuses to create it
	kept                    // decided by an administrator first, and left so
)

func (o outcome) String() string {
	return [...]string{"approved", "denied", "ignored", "pending", "refused", "kept"}[o]
}

// stage says when a case's CSR is created.
type stage int

const (
	live stage = iota // while vnode-approver runs
	// beforeRevocation: while vnode-approver is stopped; the requestor's
	// bootstrap token is then revoked and only then does the approver start
	// (a token cannot create a CSR once revoked).
	beforeRevocation
	// preApproved, preDenied: while vnode-approver is stopped, and decided
	// at once by an administrator.
	preApproved
	preDenied
)

type advCase struct {
	name string
	// as is the requestor, a key of the map setUpAdversaries returns.
	as         string
	signer     string // default: kubernetes.io/kube-apiserver-client
	req        request
	mangle     func(tb testing.TB, pem []byte) []byte
	usages     []certificatesv1.KeyUsage // default: digital signature, client auth
	expiration time.Duration
	stage      stage
	want       outcome
	check      vnapprover.Check // denied: the check the reason names
	detail     string           // denied: part of the message, where a check has several causes
}

func withKey(r request, kind string) request { r.key = kind; return r }

func withOrg(r request, org ...string) request { r.org = org; return r }

func withDNS(r request, dns ...string) request { r.dns = append(slices.Clone(r.dns), dns...); return r }

func withEmail(r request, e ...string) request { r.emails = e; return r }

func withURI(r request, u ...*url.URL) request { r.uris = u; return r }

// servingIP is the address virtual node vn-serve registers; workerIP is
// real node worker-1's, which virtual node vn-claim registers as well.
const (
	servingIP = "10.1.0.1"
	workerIP  = "10.1.0.9"
)

// servingRequest is a kubelet-serving request for node's name and ips.
func servingRequest(node string, ips ...string) request {
	r := request{cn: identity.NodeUserPrefix + node, org: []string{identity.NodesGroup}, dns: []string{node}}
	for _, ip := range ips {
		r.ips = append(r.ips, net.ParseIP(ip))
	}
	return r
}

func adversarialCases() []advCase {
	vn := vnodeRequest
	usages := func(u ...certificatesv1.KeyUsage) []certificatesv1.KeyUsage { return u }
	nodeCN := request{cn: "system:node:vn-cn-1", org: []string{"system:nodes"}}
	serving := certificatesv1.KubeletServingSignerName
	srv := servingRequest("vn-serve", servingIP)
	return []advCase{
		// Good: approved and signed.
		{name: "good bootstrap ECDSA P-256 without key encipherment", as: "boot", req: vn("vn-good-1"), want: approved},
		{name: "good bootstrap RSA 2048 with key encipherment", as: "boot", req: withKey(vn("vn-good-2"), "rsa2048"), usages: usagesClientKE, want: approved},
		{name: "good bootstrap ECDSA P-384 with key encipherment", as: "boot", req: withKey(vn("vn-good-3"), "p384"), usages: usagesClientKE, want: approved},
		{name: "good bootstrap with expirationSeconds 600", as: "boot", req: vn("vn-good-4"), expiration: 10 * time.Minute, want: approved},
		{name: "good renewal ECDSA P-256 without key encipherment", as: "vn-renew", req: vn("vn-renew"), want: approved},
		{name: "good renewal RSA 2048 with key encipherment", as: "vn-renew", req: withKey(vn("vn-renew"), "rsa2048"), usages: usagesClientKE, want: approved},
		{name: "good renewal Ed25519", as: "vn-renew", req: withKey(vn("vn-renew"), "ed25519"), want: approved},

		// Another signer: not ours, never looked at.
		{name: "signer kube-apiserver-client-kubelet", as: "boot", signer: certificatesv1.KubeAPIServerClientKubeletSignerName, req: vn("vn-sig-1"), want: pending},
		{name: "client identity from the kubelet-serving signer", as: "vn-renew", signer: certificatesv1.KubeletServingSignerName, req: vn("vn-renew"), usages: usagesServing, want: denied, check: vnapprover.CheckCommonName},
		{name: "signer example.com/vnode", as: "boot", signer: "example.com/vnode", req: vn("vn-sig-3"), want: pending},

		// Subject CN.
		{name: "CN system:node:x from a vnode bootstrap token", as: "boot", req: nodeCN, want: denied, check: vnapprover.CheckCommonName},
		{name: "CN system:node:x from a plain user is not ours", as: "mallory", req: nodeCN, want: ignored},
		{name: "CN system:vnodefoo", as: "boot", req: request{cn: "system:vnodefoo", org: []string{vnodeGroup}}, want: denied, check: vnapprover.CheckCommonName},
		{name: "CN system:vnode without colon", as: "boot", req: request{cn: "system:vnode", org: []string{vnodeGroup}}, want: denied, check: vnapprover.CheckCommonName},
		{name: "CN system:vnode: naming no node", as: "boot", req: vn(""), want: denied, check: vnapprover.CheckCommonName},
		{name: "CN with uppercase node name", as: "boot", req: vn("VN-Upper"), want: denied, check: vnapprover.CheckCommonName},
		{name: "CN with a 254-character node name", as: "boot", req: vn(strings.Repeat("a", 250) + ".bcd"), want: denied, check: vnapprover.CheckCommonName, detail: "at most 253"},
		{name: "CN with a slash in the node name", as: "boot", req: vn("vn/x"), want: denied, check: vnapprover.CheckCommonName},

		// Subject O. The API server itself refuses system:masters for this
		// signer (CertificateSubjectRestriction).
		{name: "O system:masters", as: "boot", req: withOrg(vn("vn-o-1"), "system:masters"), want: refused},
		{name: "O system:vnodes and system:masters", as: "boot", req: withOrg(vn("vn-o-2"), vnodeGroup, "system:masters"), want: refused},
		{name: "O with an extra group", as: "boot", req: withOrg(vn("vn-o-3"), vnodeGroup, "system:authenticated"), want: denied, check: vnapprover.CheckOrganization},
		{name: "O missing", as: "boot", req: withOrg(vn("vn-o-4")), want: denied, check: vnapprover.CheckOrganization},
		{name: "O system:nodes instead of system:vnodes", as: "boot", req: withOrg(vn("vn-o-5"), "system:nodes"), want: denied, check: vnapprover.CheckOrganization},
		{name: "O system:vnodes twice", as: "boot", req: withOrg(vn("vn-o-6"), vnodeGroup, vnodeGroup), want: denied, check: vnapprover.CheckOrganization},

		// Subject alternative names: none on a client certificate.
		{name: "DNS SAN", as: "boot", req: request{cn: vnodeUser("vn-san-1"), org: []string{vnodeGroup}, dns: []string{"vn-san-1.example.com"}}, want: denied, check: vnapprover.CheckSANs},
		{name: "IP SAN", as: "boot", req: request{cn: vnodeUser("vn-san-2"), org: []string{vnodeGroup}, ips: []net.IP{net.ParseIP("10.0.0.1")}}, want: denied, check: vnapprover.CheckSANs},
		{name: "email SAN", as: "boot", req: request{cn: vnodeUser("vn-san-3"), org: []string{vnodeGroup}, emails: []string{"vn@example.com"}}, want: denied, check: vnapprover.CheckSANs},
		{name: "URI SAN", as: "boot", req: request{cn: vnodeUser("vn-san-4"), org: []string{vnodeGroup}, uris: []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"}}}, want: denied, check: vnapprover.CheckSANs},

		// Usages and lifetime.
		{name: "usage server auth added", as: "boot", req: vn("vn-u-1"), usages: usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth, certificatesv1.UsageServerAuth), want: denied, check: vnapprover.CheckUsages},
		{name: "usage cert sign added", as: "boot", req: vn("vn-u-2"), usages: usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth, certificatesv1.UsageCertSign), want: denied, check: vnapprover.CheckUsages},
		{name: "usage client auth missing", as: "boot", req: vn("vn-u-3"), usages: usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment), want: denied, check: vnapprover.CheckUsages},
		{name: "expirationSeconds over the 365-day policy", as: "boot", req: vn("vn-exp-1"), expiration: 400 * 24 * time.Hour, want: denied, check: vnapprover.CheckExpiration},

		// Requestors.
		{name: "renewal for another node", as: "vn-a", req: vn("vn-b"), want: denied, check: vnapprover.CheckRequestor},
		{name: "vnode user outside system:vnodes", as: "nogroup", req: vn("vn-nogroup"), want: denied, check: vnapprover.CheckRequestor},
		{name: "plain user who may create CSRs", as: "mallory", req: vn("vn-r-1"), want: denied, check: vnapprover.CheckRequestor},
		{name: "service account that may create CSRs", as: "sa", req: vn("vn-r-2"), want: denied, check: vnapprover.CheckRequestor},
		{name: "bootstrap token outside the vnode bootstrap group", as: "other", req: vn("vn-r-3"), want: denied, check: vnapprover.CheckRequestor},
		{name: "plain user asking for its own identity is not ours", as: "mallory", req: request{cn: "mallory"}, want: ignored},

		// Bootstrap tokens revoked after the CSR was sent.
		{name: "bootstrap token expired", as: "expird", req: vn("vn-t-1"), stage: beforeRevocation, want: denied, check: vnapprover.CheckToken, detail: "expired at"},
		{name: "bootstrap token Secret deleted", as: "deletd", req: vn("vn-t-2"), stage: beforeRevocation, want: denied, check: vnapprover.CheckToken, detail: "no longer exists"},
		{name: "bootstrap token Secret being deleted", as: "deling", req: vn("vn-t-3"), stage: beforeRevocation, want: denied, check: vnapprover.CheckToken, detail: "being deleted"},
		{name: "bootstrap token moved out of the vnode group", as: "regrpd", req: vn("vn-t-4"), stage: beforeRevocation, want: denied, check: vnapprover.CheckToken, detail: "no longer contains"},

		// A CN naming a Node that is not virtual.
		{name: "CN naming a real non-virtual node", as: "boot", req: vn("worker-1"), want: denied, check: vnapprover.CheckNode},

		// Malformed requests and weak keys. The API server refuses PEM it
		// cannot parse; the rest is the approver's to refuse.
		{name: "malformed PEM", as: "boot", req: vn("vn-p-1"), mangle: malformedPEM, want: refused},
		{name: "PEM block with headers", as: "boot", req: vn("vn-p-2"), mangle: withPEMHeaders, want: denied, check: vnapprover.CheckPEM},
		{name: "two PEM blocks", as: "boot", req: vn("vn-p-3"), mangle: withSecondBlock, want: denied, check: vnapprover.CheckPEM},
		{name: "trailing data after the PEM block", as: "boot", req: vn("vn-p-4"), mangle: withTrailingData, want: denied, check: vnapprover.CheckPEM},
		{name: "RSA 1024-bit key", as: "boot", req: withKey(vn("vn-k-1"), "rsa1024"), want: denied, check: vnapprover.CheckKey},
		{name: "ECDSA P-224 key", as: "boot", req: withKey(vn("vn-k-2"), "p224"), want: denied, check: vnapprover.CheckKey},

		// Serving certificates (kubernetes.io/kubelet-serving): vn-serve
		// registered 10.1.0.1; worker-1 is no virtual node.
		{name: "serving good", as: "vn-serve", signer: serving, req: srv, usages: usagesServing, want: approved},
		{name: "serving good RSA with key encipherment", as: "vn-serve", signer: serving, req: withKey(srv, "rsa2048"), usages: usagesServingKE, want: approved},
		{name: "serving CN of another node", as: "vn-serve", signer: serving, req: servingRequest("vn-renew"), usages: usagesServing, want: denied, check: vnapprover.CheckRequestor},
		{name: "serving DNS SAN of another node", as: "vn-serve", signer: serving, req: withDNS(srv, "worker-1"), usages: usagesServing, want: denied, check: vnapprover.CheckUnregistered},
		{name: "serving IP the Node did not register", as: "vn-serve", signer: serving, req: servingRequest("vn-serve", "10.1.0.1", "10.96.0.1"), usages: usagesServing, want: denied, check: vnapprover.CheckUnregistered},
		{name: "serving IP of a real node the virtual node registered too", as: "vn-claim", signer: serving, req: servingRequest("vn-claim", workerIP), usages: usagesServing, want: denied, check: vnapprover.CheckForeign},
		{name: "serving for a non-virtual node", as: "vn-worker", signer: serving, req: servingRequest("worker-1"), usages: usagesServing, want: denied, check: vnapprover.CheckNode},
		{name: "serving for an unregistered node", as: "vn-a", signer: serving, req: servingRequest("vn-a"), usages: usagesServing, want: denied, check: vnapprover.CheckNodeNotFound},
		{name: "serving requested by another virtual node", as: "vn-a", signer: serving, req: srv, usages: usagesServing, want: denied, check: vnapprover.CheckRequestor},
		{name: "serving requested by a vnode bootstrap token", as: "boot", signer: serving, req: srv, usages: usagesServing, want: denied, check: vnapprover.CheckRequestor},
		{name: "serving requested by a service account", as: "sa", signer: serving, req: srv, usages: usagesServing, want: denied, check: vnapprover.CheckRequestor},
		{name: "serving email SAN", as: "vn-serve", signer: serving, req: withEmail(srv, "vn@example.com"), usages: usagesServing, want: denied, check: vnapprover.CheckSANs},
		{name: "serving URI SAN", as: "vn-serve", signer: serving, req: withURI(srv, &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"}), usages: usagesServing, want: denied, check: vnapprover.CheckSANs},
		{name: "serving with client auth", as: "vn-serve", signer: serving, req: srv, usages: usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth), want: denied, check: vnapprover.CheckUsages},
		{name: "serving O system:vnodes", as: "vn-serve", signer: serving, req: withOrg(srv, vnodeGroup), usages: usagesServing, want: denied, check: vnapprover.CheckOrganization},
		// A serving request to the client signer would be a system:node
		// client certificate; to the kubelet client signer it is not ours.
		{name: "serving request to the client signer", as: "vn-serve", req: srv, usages: usagesClient, want: denied, check: vnapprover.CheckCommonName},
		{name: "serving request to kube-apiserver-client-kubelet", as: "vn-serve", signer: certificatesv1.KubeAPIServerClientKubeletSignerName, req: srv, usages: usagesClient, want: pending},

		// Decided by someone else first: left as it is.
		{name: "approved by an administrator first", as: "boot", req: request{cn: vnodeUser("vn-pre-1"), org: []string{vnodeGroup}, dns: []string{"x.example.com"}}, stage: preApproved, want: kept},
		{name: "denied by an administrator first", as: "boot", req: vn("vn-pre-2"), stage: preDenied, want: kept},
	}
}

func malformedPEM(testing.TB, []byte) []byte {
	return []byte("-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY2VydGlmaWNhdGUgcmVxdWVzdA==\n-----END CERTIFICATE REQUEST-----\n")
}

func withPEMHeaders(_ testing.TB, p []byte) []byte {
	return bytes.Replace(p, []byte("-----\n"), []byte("-----\nProc-Type: 4,ENCRYPTED\n\n"), 1)
}

func withSecondBlock(tb testing.TB, p []byte) []byte {
	return append(p, vnodeRequest("vn-p-3-second").pem(tb)...)
}

func withTrailingData(_ testing.TB, p []byte) []byte {
	return append(p, []byte("trailing data\n")...)
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// csrName turns a case name into a CSR name (lower-case DNS subdomain).
func (c advCase) csrName() string {
	name := "adv-" + strings.Trim(nonName.ReplaceAllString(strings.ToLower(c.name), "-"), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	return name
}

func (c advCase) object(tb testing.TB) *certificatesv1.CertificateSigningRequest {
	tb.Helper()
	signer := c.signer
	if signer == "" {
		signer = certificatesv1.KubeAPIServerClientSignerName
	}
	usages := c.usages
	if usages == nil {
		usages = usagesClient
	}
	data := c.req.pem(tb)
	if c.mangle != nil {
		data = c.mangle(tb, data)
	}
	return newCSR(c.csrName(), signer, data, usages, c.expiration)
}

// Token IDs of the adversaries' bootstrap tokens.
const (
	tokenGood     = "vnboot"
	tokenExpired  = "expird"
	tokenDeleted  = "deletd"
	tokenDeleting = "deling"
	tokenRegroup  = "regrpd"
	tokenOther    = "other1"
	otherGroup    = "system:bootstrappers:other"
	holdFinalizer = "vnode.test/hold"
)

// setUpAdversaries creates every requestor of the table, each able to
// create CSRs, and a real (non-virtual) Node, worker-1.
func setUpAdversaries(ctx context.Context, t *testing.T, e *env) map[string]kubernetes.Interface {
	t.Helper()
	cp := e.cp
	token := func(id string, groups []string, mutate func(*corev1.Secret)) kubernetes.Interface {
		return clientFor(t, createToken(ctx, t, cp, id, groups, mutate))
	}
	clients := map[string]kubernetes.Interface{
		"boot":   token(tokenGood, []string{bootstrapGroup}, nil),
		"expird": token(tokenExpired, []string{bootstrapGroup}, nil),
		"deletd": token(tokenDeleted, []string{bootstrapGroup}, nil),
		"deling": token(tokenDeleting, []string{bootstrapGroup}, func(s *corev1.Secret) { s.Finalizers = []string{holdFinalizer} }),
		"regrpd": token(tokenRegroup, []string{bootstrapGroup}, nil),
		"other":  token(tokenOther, []string{otherGroup}, nil),
		// Virtual nodes renewing, with certificates from the cluster CA.
		"vn-renew": e.userClient(t, vnodeUser("vn-renew"), vnodeGroup),
		"vn-a":     e.userClient(t, vnodeUser("vn-a"), vnodeGroup),
		// vn-serve asks for its serving certificate; vn-worker is a
		// virtual node's identity naming a real node.
		"vn-serve":  e.userClient(t, vnodeUser("vn-serve"), vnodeGroup),
		"vn-worker": e.userClient(t, vnodeUser("worker-1"), vnodeGroup),
		"vn-claim":  e.userClient(t, vnodeUser("vn-claim"), vnodeGroup),
		// A vnode-looking user outside system:vnodes, a plain user and a
		// service account, each allowed to create CSRs.
		"nogroup": e.userClient(t, vnodeUser("vn-nogroup")),
		"mallory": e.userClient(t, "mallory"),
	}
	bindClusterRole(ctx, t, cp.Client, "test:csr-creators", nodeBootstrapper,
		groupSubject(otherGroup), userSubject(vnodeUser("vn-nogroup")), userSubject("mallory"),
		serviceAccountSubject("adversary", "csr-maker"))
	if err := cp.CreateNamespace(ctx, "adversary"); err != nil {
		t.Fatal(err)
	}
	clients["sa"] = clientFor(t, e.serviceAccountConfig(ctx, t, "adversary", "csr-maker"))

	worker := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "worker-1", Labels: map[string]string{"kubernetes.io/os": "linux"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "vnode.test/no-kubelet", Effect: corev1.TaintEffectNoSchedule}}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: workerIP}}},
	}
	if _, err := cp.Client.CoreV1().Nodes().Create(ctx, worker, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node worker-1: %v", err)
	}
	registerVirtualNode(ctx, t, cp.Client, "vn-serve", servingIP)
	registerVirtualNode(ctx, t, cp.Client, "vn-claim", workerIP)
	return clients
}

// registerVirtualNode creates a virtual node's Node with address ip, as
// the node registers itself.
func registerVirtualNode(ctx context.Context, t *testing.T, client kubernetes.Interface, name, ip string) {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: identity.TaintKey, Value: identity.TaintValue, Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}},
	}
	got, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	if len(got.Status.Addresses) != 2 {
		t.Fatalf("node %s registered addresses %v", name, got.Status.Addresses)
	}
}

// revokeTokens revokes each token a beforeRevocation case used, a different
// way each.
func revokeTokens(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	secrets := client.CoreV1().Secrets("kube-system")
	name := func(id string) string { return "bootstrap-token-" + id }
	// kube-controller-manager's tokencleaner deletes expired tokens; keep
	// this one so the approver sees it expired, not gone.
	keepSecret(ctx, t, client, "kube-system", name(tokenExpired))
	edit := func(id string, f func(*corev1.Secret)) {
		s, err := secrets.Get(ctx, name(id), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading token %s: %v", id, err)
		}
		f(s)
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("updating token %s: %v", id, err)
		}
	}
	edit(tokenExpired, func(s *corev1.Secret) {
		s.Data["expiration"] = []byte(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	})
	edit(tokenRegroup, func(s *corev1.Secret) { s.Data["auth-extra-groups"] = []byte(otherGroup) })
	for _, id := range []string{tokenDeleted, tokenDeleting} {
		if err := secrets.Delete(ctx, name(id), metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting token %s: %v", id, err)
		}
	}
}

// keepSecret makes a ValidatingAdmissionPolicy refuse every deletion of
// Secret namespace/name, and waits until the API server enforces it.
func keepSecret(ctx context.Context, t *testing.T, client kubernetes.Interface, namespace, name string) {
	t.Helper()
	const msg = "kept for the approver test"
	policyName := "vnode-test-keep-" + name
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					ResourceNames: []string{name},
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Delete},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: msg}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	adm := client.AdmissionregistrationV1()
	if _, err := adm.ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating policy %s: %v", policyName, err)
	}
	if _, err := adm.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating policy binding %s: %v", policyName, err)
	}
	// The API server loads policies asynchronously; a dry-run delete shows
	// when it enforces this one.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := client.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err == nil:
			return false, nil
		case strings.Contains(err.Error(), msg):
			return true, nil
		}
		return false, fmt.Errorf("dry-run delete of %s/%s: %w", namespace, name, err)
	})
	if err != nil {
		t.Fatalf("waiting for policy %s to be enforced: %v", policyName, err)
	}
}

// created is what became of one case's create call.
type created struct {
	name string
	err  error
}

// testAdversarial creates every case's CSR through the API as its
// requestor and checks what vnode-approver made of it.
func testAdversarial(ctx context.Context, t *testing.T, e *env) {
	cases := adversarialCases()
	// Facts (tokens, Nodes) and staged CSRs are in place before the approver
	// starts, so its caches hold them when it first decides.
	e.stopApprover(t)
	clients := setUpAdversaries(ctx, t, e)
	results := make([]created, len(cases))
	for i, c := range cases {
		if c.stage != live {
			results[i] = createCase(ctx, t, e, clients, c)
		}
	}
	revokeTokens(ctx, t, e.cp.Client)
	e.startApprover(ctx, t)
	for i, c := range cases {
		if c.stage == live {
			results[i] = createCase(ctx, t, e, clients, c)
		}
	}
	awaitOutcomes(ctx, t, e, cases, results)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) { verifyCase(ctx, t, e.cp.Client, c, results[i]) })
	}
	t.Run("events recorded", func(t *testing.T) {
		// Denials get a Warning event; approvals are recorded on the
		// CSR's Approved condition only (one API write per approval).
		checkEvent(ctx, t, e.cp.Client, advCase{name: "CN system:vnodefoo"}.csrName(), corev1.EventTypeWarning, "Denied")
		evs, err := e.cp.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + cases[0].csrName()})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if ev.Source.Component == vnapprover.Component {
				t.Errorf("an approval wrote an event: %s %s %q", ev.Type, ev.Reason, ev.Message)
			}
		}
	})
	e.checkApproverLog(t)
}

func createCase(ctx context.Context, t *testing.T, e *env, clients map[string]kubernetes.Interface, c advCase) created {
	t.Helper()
	client, ok := clients[c.as]
	if !ok {
		t.Fatalf("case %q: no requestor %q", c.name, c.as)
	}
	_, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, c.object(t), metav1.CreateOptions{})
	if err == nil && (c.stage == preApproved || c.stage == preDenied) {
		t2 := certificatesv1.CertificateApproved
		reason := "AdminApproved"
		if c.stage == preDenied {
			t2, reason = certificatesv1.CertificateDenied, "AdminDenied"
		}
		if err := decide(ctx, e.cp.Client, c.csrName(), t2, reason); err != nil {
			t.Fatal(err)
		}
	}
	return created{name: c.csrName(), err: err}
}

// awaitOutcomes waits until vnode-approver has decided every CSR it must
// decide, the approved ones are signed, and it has logged each CSR it must
// ignore; after that, CSRs still pending were left pending on purpose.
func awaitOutcomes(ctx context.Context, t *testing.T, e *env, cases []advCase, results []created) {
	t.Helper()
	var ignoredLines []string
	for i, c := range cases {
		if results[i].err != nil {
			continue
		}
		var done func(*certificatesv1.CertificateSigningRequest) bool
		switch c.want {
		case approved:
			done = func(csr *certificatesv1.CertificateSigningRequest) bool {
				return len(csr.Status.Certificate) > 0 || condition(csr, certificatesv1.CertificateDenied) != nil || condition(csr, certificatesv1.CertificateFailed) != nil
			}
		case denied:
			done = decided
		case ignored:
			ignoredLines = append(ignoredLines, fmt.Sprintf(`msg="ignoring CSR" csr=%s `, results[i].name))
			continue
		default:
			continue
		}
		if _, err := waitForCSR(ctx, e.cp.Client, results[i].name, time.Minute, done); err != nil {
			t.Errorf("case %q: %v", c.name, err)
		}
	}
	if err := e.approver.waitForLines(ctx, time.Minute, ignoredLines...); err != nil {
		t.Errorf("vnode-approver did not look at every CSR it should ignore: %v", err)
	}
}

func verifyCase(ctx context.Context, t *testing.T, client kubernetes.Interface, c advCase, r created) {
	if c.want == refused {
		if r.err == nil {
			t.Fatalf("the API server accepted CSR %s; the case expects it to refuse", r.name)
		}
		if !apierrors.IsForbidden(r.err) && !apierrors.IsInvalid(r.err) {
			t.Fatalf("creating CSR %s failed, but not as a refusal: %v", r.name, r.err)
		}
		t.Logf("refused by the API server: %v", r.err)
		return
	}
	if r.err != nil {
		t.Fatalf("creating CSR %s as %s: %v", r.name, c.as, r.err)
	}
	csr, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, r.name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading CSR %s: %v", r.name, err)
	}
	if err := checkOutcome(t, c, csr); err != nil {
		t.Fatalf("CSR %s (want %s): %v; status %+v", r.name, c.want, err, statusOf(csr))
	}
}

func checkOutcome(tb testing.TB, c advCase, csr *certificatesv1.CertificateSigningRequest) error {
	conds := csr.Status.Conditions
	switch c.want {
	case approved:
		a := condition(csr, certificatesv1.CertificateApproved)
		if a == nil || a.Reason != "AutoApproved" || len(conds) != 1 {
			return fmt.Errorf("not approved by vnode-approver alone")
		}
		if len(csr.Status.Certificate) == 0 {
			return fmt.Errorf("approved but not signed")
		}
		return checkIssued(csr, c.req, testKey(tb, c.req.keyKind()))
	case denied:
		d := condition(csr, certificatesv1.CertificateDenied)
		switch {
		case d == nil || len(conds) != 1:
			return fmt.Errorf("not denied (only)")
		case d.Reason != c.check.ConditionReason():
			return fmt.Errorf("denied with reason %q (%s), want %q", d.Reason, d.Message, c.check.ConditionReason())
		case !strings.Contains(d.Message, c.detail):
			return fmt.Errorf("denial message %q lacks %q", d.Message, c.detail)
		case len(csr.Status.Certificate) > 0:
			return fmt.Errorf("denied, yet a certificate was issued")
		}
		tb.Logf("denied: %s: %s", d.Reason, d.Message)
	case ignored, pending:
		if len(conds) > 0 || len(csr.Status.Certificate) > 0 {
			return fmt.Errorf("not left pending")
		}
	case kept:
		want := certificatesv1.CertificateApproved
		if c.stage == preDenied {
			want = certificatesv1.CertificateDenied
		}
		if len(conds) != 1 || conds[0].Type != want || !strings.HasPrefix(conds[0].Reason, "Admin") {
			return fmt.Errorf("the administrator's %s is not the only condition", want)
		}
	}
	return nil
}

// checkEvent waits for vnode-approver's event about CSR name (events about
// cluster-scoped objects go to "default", where its RBAC lets it write).
func checkEvent(ctx context.Context, t *testing.T, client kubernetes.Interface, name, eventType, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, fmt.Errorf("listing events: %w", err)
		}
		for _, ev := range evs.Items {
			if ev.Source.Component == vnapprover.Component && ev.Type == eventType && ev.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event %q from %s about CSR %s: %v", eventType, reason, vnapprover.Component, name, err)
	}
}
