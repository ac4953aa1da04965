// Package admission tests the ValidatingAdmissionPolicies shipped in
// manifests/vnode on a real kube-apiserver (integration/controlplane): each
// attack a virtual node's identity could make on another node's objects
// through the cluster-wide RBAC of system:vnodes is performed and must be
// refused, and the same write on its own objects must pass.
package admission
