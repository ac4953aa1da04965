// Package identity holds who a virtual node is, in the one place every
// part reads it from: the user and group of its client certificate, the
// kubelet identity an edge node's agent may carry, the bootstrap-token
// group, and the label and taint that mark its Node.
package identity

import "strings"

// A virtual node authenticates as VNodeUserPrefix+<node> in VNodesGroup
// (not system:node:, which NodeRestriction would keep from writing pod
// metadata; see the README's identity section).
const (
	VNodeUserPrefix = "system:vnode:"
	VNodesGroup     = "system:vnodes"
	// VNodeLookalikePrefix makes look-alike names (system:vnodefoo,
	// system:vnode) vnode's to judge, so they are denied, not ignored.
	VNodeLookalikePrefix = "system:vnode"

	// A kubelet's own identity, which an edge node's tunnel agent reuses.
	NodeUserPrefix = "system:node:"
	NodesGroup     = "system:nodes"

	// BootstrapGroup is the auth-extra-group of vnode bootstrap tokens.
	BootstrapGroup = "system:bootstrappers:vnode"
)

// The label and taint every virtual node's Node carries.
const (
	NodeTypeLabel   = "type"
	NodeTypeVirtual = "virtual-kubelet"
	TaintKey        = "virtual-kubelet.io/provider"
	TaintValue      = "alibabacloud"
)

// VNodeUser is the user name of the virtual node called node.
func VNodeUser(node string) string { return VNodeUserPrefix + node }

// IsVirtualNode reports whether a Node's labels mark it as a virtual node.
func IsVirtualNode(labels map[string]string) bool {
	return labels[NodeTypeLabel] == NodeTypeVirtual
}

// VNodeOf returns the node a virtual node's user name names.
func VNodeOf(user string) (string, bool) {
	node, ok := strings.CutPrefix(user, VNodeUserPrefix)
	if !ok || node == "" {
		return "", false
	}
	return node, true
}
