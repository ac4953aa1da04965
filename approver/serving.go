package approver

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/vnode-project/vnode/internal/identity"
)

// A virtual node's kubelet-serving certificate is a kubelet's: CN
// system:node:<node>, O system:nodes, server auth, SANs naming the node.
// kube-controller-manager signs any such CSR once approved, and the API
// server then trusts the key for every address in it, so the approver
// binds each name and address to the one node that asked for it.
//
// Ours: a kubelet-serving CSR is vnode's to judge when its requestor is a
// virtual node (user system:vnode:*, group system:vnodes) or a vnode
// bootstrap token, when its subject looks like a virtual node's client
// identity, or when its CN names a Node labelled as a virtual node. A real
// kubelet's serving CSR names a real Node and is left to whoever approves
// those.

// servingOurs says whether a kubelet-serving CSR is vnode's to judge; an
// error means the Node cache could not answer.
func (p Policy) servingOurs(csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest, facts Facts) (bool, error) {
	if p.ours(csr, req) {
		return true, nil
	}
	if req == nil {
		return false, nil
	}
	node, ok := strings.CutPrefix(req.Subject.CommonName, identity.NodeUserPrefix)
	if !ok || node == "" {
		return false, nil
	}
	labels, found, err := facts.Nodes.NodeLabels(node)
	if err != nil {
		return false, fmt.Errorf("looking up node %s: %w", node, err)
	}
	return found && identity.IsVirtualNode(labels), nil
}

// evaluateServing decides on a kubelet-serving CSR: approved only when a
// virtual node asks, as itself, for its own name and the addresses its Node
// registered.
func (p Policy) evaluateServing(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, facts Facts) Decision {
	req, pemErr := parseRequest(csr.Spec.Request)
	ours, err := p.servingOurs(csr, req, facts)
	if err != nil {
		return retryLater(err)
	}
	if !ours {
		return Decision{Verdict: Ignore, IgnoreReason: IgnoreNotOurs, Message: "neither the requestor nor the node named is a virtual node"}
	}
	if pemErr != nil {
		return deny(CheckPEM, pemErr.Error())
	}
	if err := checkKey(req); err != nil {
		return deny(CheckKey, err.Error())
	}
	node, err := nodeName(req.Subject.CommonName, identity.NodeUserPrefix)
	if err != nil {
		return deny(CheckCommonName, err.Error())
	}
	if err := checkOrganization(req, identity.NodesGroup); err != nil {
		return deny(CheckOrganization, err.Error())
	}
	if err := checkServingSANs(req); err != nil {
		return deny(CheckSANs, err.Error())
	}
	if err := checkServingUsages(req, csr.Spec.Usages); err != nil {
		return deny(CheckUsages, err.Error())
	}
	if e := csr.Spec.ExpirationSeconds; e != nil && time.Duration(*e)*time.Second > p.maxExpiration() {
		return deny(CheckExpiration, fmt.Sprintf("expirationSeconds %d exceeds the maximum %d", *e, int64(p.maxExpiration()/time.Second)))
	}
	if err := checkServingRequestor(Requestor(csr), node); err != nil {
		return deny(CheckRequestor, err.Error())
	}
	n, err := facts.Registered.GetNode(ctx, node)
	switch {
	case apierrors.IsNotFound(err):
		return deny(CheckNodeNotFound, fmt.Sprintf("node %s is not registered; a serving certificate names the addresses its Node registered", node))
	case err != nil:
		return retryLater(fmt.Errorf("reading node %s: %w", node, err))
	case !identity.IsVirtualNode(n.Labels):
		return deny(CheckNode, fmt.Sprintf("node %s is not a virtual node (no label %s=%s)", node, identity.NodeTypeLabel, identity.NodeTypeVirtual))
	}
	if err := checkRegistered(req, n); err != nil {
		return deny(CheckUnregistered, err.Error())
	}
	nodes, err := facts.Registered.ListNodes(ctx)
	if err != nil {
		return retryLater(fmt.Errorf("listing nodes: %w", err))
	}
	if err := checkNotForeign(req, node, nodes); err != nil {
		return deny(CheckForeign, err.Error())
	}
	return Decision{Verdict: Approve, Serving: true,
		Message: fmt.Sprintf("Auto-approving kubelet-serving certificate of virtual node %s (DNS %q, IP %v) requested by %s", node, req.DNSNames, req.IPAddresses, csr.Spec.Username)}
}

// checkServingSANs: names and addresses only, and at least one (the
// kubelet-serving signer refuses a certificate that names nothing).
func checkServingSANs(req *x509.CertificateRequest) error {
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return fmt.Errorf("a serving certificate carries only DNS and IP subject alternative names; this request has email %q, URI %v", req.EmailAddresses, req.URIs)
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return fmt.Errorf("the request names no DNS name or IP address")
	}
	return nil
}

var (
	servingUsagesRSA = sets.New(certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth)
	servingUsages    = sets.New(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth)
)

// checkServingUsages: what TLS serving needs with the request's key, as
// client-go's kubelet-serving usages (key encipherment with RSA only), and
// nothing else (no client auth).
func checkServingUsages(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	want := servingUsages
	if _, ok := req.PublicKey.(*rsa.PublicKey); ok {
		want = servingUsagesRSA
	}
	got := sets.New(usages...)
	if len(got) != len(usages) || !got.Equal(want) {
		return fmt.Errorf("usages %q; with this key want exactly %q", usages, sets.List(want))
	}
	return nil
}

// checkServingRequestor: only the node itself, authenticated by its own
// client certificate, asks for its serving certificate.
func checkServingRequestor(user UserInfo, node string) error {
	if user.Username != identity.VNodeUser(node) || !slices.Contains(user.Groups, identity.VNodesGroup) {
		return fmt.Errorf("requestor %s (groups %q) is not virtual node %s itself (%s in %s)", user.Username, user.Groups, node, identity.VNodeUser(node), identity.VNodesGroup)
	}
	return nil
}

// nodeAddresses are the names (its own and its DNS-type addresses) and IP
// addresses Node n answers to.
func nodeAddresses(n *corev1.Node) (sets.Set[string], []net.IP) {
	names := sets.New(n.Name)
	var ips []net.IP
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			names.Insert(a.Address)
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		}
	}
	return names, ips
}

// checkRegistered: every DNS name is the node's name or a DNS address its
// Node registered, and every IP an IP address it registered.
func checkRegistered(req *x509.CertificateRequest, n *corev1.Node) error {
	names, ips := nodeAddresses(n)
	for _, d := range req.DNSNames {
		if !names.Has(d) {
			return fmt.Errorf("DNS name %q is neither node %s's name nor an address its Node registered (%q)", d, n.Name, sets.List(names))
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			return fmt.Errorf("IP address %s is not an address node %s registered (%v)", ip, n.Name, ips)
		}
	}
	return nil
}

// checkNotForeign: no other Node answers to a name or address in the
// request. A node writes its own status.addresses, so registering is no
// proof of owning an address; a certificate the API server trusts for
// another node's address would let this node pose as that node's kubelet.
// Loopback addresses are exempt: the API server never dials a node's
// loopback address, and nodes on one machine (the emulator's) share one.
func checkNotForeign(req *x509.CertificateRequest, node string, nodes []corev1.Node) error {
	for i := range nodes {
		other := &nodes[i]
		if other.Name == node {
			continue
		}
		names, ips := nodeAddresses(other)
		for _, d := range req.DNSNames {
			if names.Has(d) {
				return fmt.Errorf("DNS name %q is also node %s's", d, other.Name)
			}
		}
		for _, ip := range req.IPAddresses {
			if !ip.IsLoopback() && slices.ContainsFunc(ips, ip.Equal) {
				return fmt.Errorf("IP address %s is also registered by node %s", ip, other.Name)
			}
		}
	}
	return nil
}
