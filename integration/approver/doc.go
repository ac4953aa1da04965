// Package approver tests vnode-approver against a real control plane
// (integration/controlplane): kube-controller-manager signs, its built-in
// csrapproving controller is off, and vnode-approver runs as a process under
// its own service account with the RBAC of manifests/approver. Every CSR is
// created through the API by the identity that would send it, so the API
// server records the requestor exactly as in a cluster.
//
// The tests cover adversarial CSRs (none approved), a virtual node's TLS
// bootstrap and renewal through provider/bootstrap, fairness under a flood
// from one requestor, and the least privilege of the approver's RBAC. The
// benchmark compares approval latency and throughput with
// kube-controller-manager's csrapproving controller on equivalent kubelet
// CSRs.
package approver
