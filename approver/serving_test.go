package approver

import (
	"net"
	"net/url"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

var (
	usagesServing    = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	usagesServingRSA = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
)

// servingRequest is what vn-existing asks for: its name and its address.
func servingRequest(node string, ips ...string) request {
	r := request{cn: identity.NodeUserPrefix + node, org: []string{identity.NodesGroup}, dns: []string{node}}
	for _, ip := range ips {
		r.ips = append(r.ips, net.ParseIP(ip))
	}
	return r
}

// claim adds addrs to the addresses Node node registered.
func claim(f *testFacts, node string, addrs ...corev1.NodeAddress) {
	n := f.registered.nodes[node].DeepCopy()
	n.Status.Addresses = append(n.Status.Addresses, addrs...)
	f.registered.nodes[node] = n
}

func serving(r request, u UserInfo, usages []certificatesv1.KeyUsage, edit ...func(*certificatesv1.CertificateSigningRequest)) func(t *testing.T) *certificatesv1.CertificateSigningRequest {
	return csrOf(r, u, usages, append([]func(*certificatesv1.CertificateSigningRequest){withSigner(ServingSignerName)}, edit...)...)
}

// TestEvaluateServing is the adversarial table of kubelet-serving CSRs:
// a virtual node gets a serving certificate for its own name and
// registered addresses, asked for as itself, and for nothing else.
func TestEvaluateServing(t *testing.T) {
	self := vnodeUser("vn-existing")
	good := servingRequest("vn-existing", "10.0.0.1")
	withKey := func(r request, k string) request { r.key = k; return r }
	with := func(r request, f func(*request)) request { f(&r); return r }
	kubelet := UserInfo{Username: "system:node:worker-1", Groups: []string{identity.NodesGroup, "system:authenticated"}}

	cases := []policyCase{
		{name: "good/ECDSA P-256, name and IP", csr: serving(good, self, usagesServing), want: Approve, serve: true},
		{name: "good/RSA 2048 with key encipherment", csr: serving(withKey(good, "rsa2048"), self, usagesServingRSA), want: Approve, serve: true},
		{name: "good/registered DNS address", csr: serving(with(good, func(r *request) { r.dns = append(r.dns, "vn-existing.internal") }), self, usagesServing), want: Approve, serve: true},
		{name: "good/IP only", csr: serving(with(good, func(r *request) { r.dns = nil }), self, usagesServing), want: Approve, serve: true},

		// Not ours: a real kubelet's serving CSR, for its real node.
		{name: "ignore/a kubelet's own serving CSR", csr: serving(servingRequest("worker-1", "10.0.0.9"), kubelet, usagesServing), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/a stranger naming an unknown node", csr: serving(servingRequest("nobody", "10.0.0.1"), UserInfo{Username: "alice"}, usagesServing), want: Ignore, ignore: IgnoreNotOurs},
		{name: "ignore/already approved", csr: serving(good, self, usagesServing, withCondition(certificatesv1.CertificateApproved)), want: Ignore, ignore: IgnoreAlreadyDecided},

		// Another node's name.
		{name: "deny/CN names another virtual node", csr: serving(servingRequest("vn-other", "10.0.0.2"), self, usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/DNS SAN names another node", csr: serving(with(good, func(r *request) { r.dns = append(r.dns, "vn-other") }), self, usagesServing), want: Deny, check: CheckUnregistered},
		{name: "deny/DNS SAN wildcard", csr: serving(with(good, func(r *request) { r.dns = []string{"*.internal"} }), self, usagesServing), want: Deny, check: CheckUnregistered},
		{name: "deny/DNS SAN of the API server", csr: serving(with(good, func(r *request) { r.dns = append(r.dns, "kubernetes.default.svc") }), self, usagesServing), want: Deny, check: CheckUnregistered},
		// An address the Node did not register.
		{name: "deny/IP SAN another node registered", csr: serving(servingRequest("vn-existing", "10.0.0.1", "10.0.0.2"), self, usagesServing), want: Deny, check: CheckUnregistered},
		{name: "deny/IP SAN loopback", csr: serving(servingRequest("vn-existing", "127.0.0.1"), self, usagesServing), want: Deny, check: CheckUnregistered},
		{name: "deny/no SAN at all", csr: serving(with(good, func(r *request) { r.dns, r.ips = nil, nil }), self, usagesServing), want: Deny, check: CheckSANs},
		{name: "deny/email SAN", csr: serving(with(good, func(r *request) { r.emails = []string{"vn@example.com"} }), self, usagesServing), want: Deny, check: CheckSANs},
		{name: "deny/URI SAN", csr: serving(with(good, func(r *request) {
			r.uris = []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"}}
		}), self, usagesServing), want: Deny, check: CheckSANs},

		// A node writes its own addresses: one another node has too is
		// refused, so is a hostname that is another node's name.
		{name: "deny/IP of a real node claimed as its own", csr: serving(servingRequest("vn-existing", "10.0.0.9"), self, usagesServing),
			facts: func(f *testFacts) {
				claim(f, "vn-existing", corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.9"})
			},
			want: Deny, check: CheckForeign},
		{name: "deny/hostname that is a real node's name", csr: serving(with(good, func(r *request) { r.dns = append(r.dns, "worker-1") }), self, usagesServing),
			facts: func(f *testFacts) {
				claim(f, "vn-existing", corev1.NodeAddress{Type: corev1.NodeHostName, Address: "worker-1"})
			},
			want: Deny, check: CheckForeign},
		{name: "good/loopback address another node shares", csr: serving(servingRequest("vn-existing", "127.0.0.1"), self, usagesServing),
			facts: func(f *testFacts) {
				claim(f, "vn-existing", corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "127.0.0.1"})
				claim(f, "vn-other", corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "127.0.0.1"})
			}, want: Approve, serve: true},
		{name: "retry/Node list failed", csr: serving(good, self, usagesServing), facts: func(f *testFacts) {
			f.registered = fakeRegistered{nodes: f.registered.nodes, listErr: errUnavailable}
		}, want: Retry},

		// Nodes.
		{name: "deny/a non-virtual node, asked by a virtual node", csr: serving(servingRequest("worker-1", "10.0.0.9"), vnodeUser("worker-1"), usagesServing), want: Deny, check: CheckNode},
		{name: "deny/a node not registered", csr: serving(servingRequest("vn-new", "10.0.0.5"), vnodeUser("vn-new"), usagesServing), want: Deny, check: CheckNodeNotFound},

		// Requestors that are not the node.
		{name: "deny/another virtual node", csr: serving(good, vnodeUser("vn-other"), usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/the node's user outside system:vnodes", csr: serving(good, UserInfo{Username: self.Username, Groups: []string{"system:authenticated"}}, usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/vnode bootstrap token", csr: serving(good, bootstrapUser("abcdef", identity.BootstrapGroup), usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/service account", csr: serving(good, UserInfo{Username: "system:serviceaccount:kube-system:vnode", Groups: []string{"system:serviceaccounts", "system:authenticated"}}, usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/a kubelet asking for a virtual node's name", csr: serving(good, kubelet, usagesServing), want: Deny, check: CheckRequestor},
		{name: "deny/system:node: of the virtual node itself", csr: serving(good, UserInfo{Username: "system:node:vn-existing", Groups: []string{identity.NodesGroup}}, usagesServing), want: Deny, check: CheckRequestor},

		// Subject and usages.
		{name: "deny/CN system:vnode: (the client identity)", csr: serving(with(good, func(r *request) { r.cn = identity.VNodeUser("vn-existing") }), self, usagesServing), want: Deny, check: CheckCommonName},
		{name: "deny/CN without a node", csr: serving(with(good, func(r *request) { r.cn = identity.NodeUserPrefix }), self, usagesServing), want: Deny, check: CheckCommonName},
		{name: "deny/O system:vnodes", csr: serving(with(good, func(r *request) { r.org = []string{identity.VNodesGroup} }), self, usagesServing), want: Deny, check: CheckOrganization},
		{name: "deny/O with system:masters too", csr: serving(with(good, func(r *request) { r.org = []string{identity.NodesGroup, "system:masters"} }), self, usagesServing), want: Deny, check: CheckOrganization},
		{name: "deny/O missing", csr: serving(with(good, func(r *request) { r.org = nil }), self, usagesServing), want: Deny, check: CheckOrganization},
		{name: "deny/client auth added", csr: serving(good, self, append(usagesServing[:2:2], certificatesv1.UsageClientAuth)), want: Deny, check: CheckUsages},
		{name: "deny/client auth instead of server auth", csr: serving(good, self, usagesDSCA), want: Deny, check: CheckUsages},
		{name: "deny/key encipherment with ECDSA", csr: serving(good, self, usagesServingRSA), want: Deny, check: CheckUsages},
		{name: "deny/RSA without key encipherment", csr: serving(withKey(good, "rsa2048"), self, usagesServing), want: Deny, check: CheckUsages},
		{name: "deny/cert sign added", csr: serving(good, self, append(usagesServing[:2:2], certificatesv1.UsageCertSign)), want: Deny, check: CheckUsages},
		{name: "deny/weak key", csr: serving(withKey(good, "rsa1024"), self, usagesServingRSA), want: Deny, check: CheckKey},
		{name: "deny/no PEM", csr: serving(good, self, usagesServing, withRequest([]byte("junk"))), want: Deny, check: CheckPEM},

		// Wrong signer: a serving-shaped request to the client signer would
		// be a system:node client certificate.
		{name: "deny/serving request to the client signer", csr: serving(good, self, usagesServing, withSigner(SignerName)), want: Deny, check: CheckCommonName},
		{name: "ignore/serving request to another signer", csr: serving(good, self, usagesServing, withSigner(certificatesv1.KubeAPIServerClientKubeletSignerName)), want: Ignore, ignore: IgnoreNotOurs},

		{name: "retry/Node read failed", csr: serving(good, self, usagesServing), facts: func(f *testFacts) { f.registered.err = errUnavailable }, want: Retry},
		{name: "retry/Node cache failed for a stranger", csr: serving(good, UserInfo{Username: "alice"}, usagesServing), facts: func(f *testFacts) { f.nodes.err = errUnavailable }, want: Retry},
	}
	runPolicyCases(t, cases)
}
