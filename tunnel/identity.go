package tunnel

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"github.com/vnode-project/vnode/internal/identity"
)

// Identity is one accepted form of agent certificate: CN = Prefix+<node>
// with Group among the organisations.
type Identity struct {
	Prefix string
	Group  string
}

// DefaultIdentities: a virtual node's client identity (vnode-approver
// approves it for vnode-kubelet, which embeds the agent) and a kubelet's
// own client identity (kube-controller-manager approves it; a standalone
// agent on an edge node reuses /var/lib/kubelet/pki/kubelet-client-current.pem).
// Either names exactly one node, so a session can serve no other.
func DefaultIdentities() []Identity {
	return []Identity{
		{Prefix: identity.VNodeUserPrefix, Group: identity.VNodesGroup},
		{Prefix: identity.NodeUserPrefix, Group: identity.NodesGroup},
	}
}

// NodeOf returns the node an agent certificate (already verified against
// the agent CA) speaks for.
func NodeOf(cert *x509.Certificate, ids []Identity) (string, error) {
	cn := cert.Subject.CommonName
	for _, id := range ids {
		node, ok := strings.CutPrefix(cn, id.Prefix)
		if !ok {
			continue
		}
		if node == "" || strings.ContainsAny(node, ":/ ") {
			return "", fmt.Errorf("certificate %q names no valid node", cn)
		}
		if !slices.Contains(cert.Subject.Organization, id.Group) {
			return "", fmt.Errorf("certificate %q is not in group %s", cn, id.Group)
		}
		return node, nil
	}
	return "", fmt.Errorf("certificate %q is not a tunnel agent identity", cn)
}
