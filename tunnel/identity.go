package tunnel

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"github.com/vnode-project/vnode/internal/identity"
)

// Identity is one accepted form of agent certificate: CN = Prefix+<node>
// with Group among the organisations. Virtual says which Nodes a session
// of this identity may serve: only those labelled type=virtual-kubelet
// (true), or only those not (false). The routing rule (route.go) checks
// it against the Node as it is when a request arrives.
type Identity struct {
	Prefix  string
	Group   string
	Virtual bool
}

// DefaultIdentities: a virtual node's client identity (vnode-approver
// approves it for vnode-kubelet, which embeds the agent) and a kubelet's
// own client identity (kube-controller-manager approves it; a standalone
// agent on an edge node reuses /var/lib/kubelet/pki/kubelet-client-current.pem).
// Either names exactly one node, so a session can serve no other; and a
// system:vnode: certificate never serves a real node, whose kubelet
// identity is the only one that may.
func DefaultIdentities() []Identity {
	return []Identity{
		{Prefix: identity.VNodeUserPrefix, Group: identity.VNodesGroup, Virtual: true},
		{Prefix: identity.NodeUserPrefix, Group: identity.NodesGroup},
	}
}

// NodeOf returns the node an agent certificate (already verified against
// the agent CA) speaks for, and the identity it speaks as.
func NodeOf(cert *x509.Certificate, ids []Identity) (string, Identity, error) {
	cn := cert.Subject.CommonName
	for _, id := range ids {
		node, ok := strings.CutPrefix(cn, id.Prefix)
		if !ok {
			continue
		}
		if node == "" || strings.ContainsAny(node, ":/ ") {
			return "", Identity{}, fmt.Errorf("certificate %q names no valid node", cn)
		}
		if !slices.Contains(cert.Subject.Organization, id.Group) {
			return "", Identity{}, fmt.Errorf("certificate %q is not in group %s", cn, id.Group)
		}
		return node, id, nil
	}
	return "", Identity{}, fmt.Errorf("certificate %q is not a tunnel agent identity", cn)
}

// kindOf names the Nodes an identity may serve, for messages.
func (id Identity) kindOf() string {
	if id.Virtual {
		return "a Node labelled " + identity.NodeTypeLabel + "=" + identity.NodeTypeVirtual
	}
	return "a Node not labelled " + identity.NodeTypeLabel + "=" + identity.NodeTypeVirtual
}
