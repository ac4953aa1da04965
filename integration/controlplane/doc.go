// Package controlplane builds and runs a real Kubernetes control plane for
// vnode's tests and for people trying vnode locally: etcd, kube-apiserver,
// kube-scheduler and kube-controller-manager (plus kubectl), compiled from
// the pinned upstream Go modules into a cache outside the repository and
// started on free loopback ports with a freshly generated PKI.
//
// Nothing here is a fake: RBAC, admission (NodeRestriction, webhooks), CSR
// signing, scheduling and watches behave as they do in a kubeadm cluster, so
// tests that depend on the API server's behaviour exercise the real thing.
package controlplane
