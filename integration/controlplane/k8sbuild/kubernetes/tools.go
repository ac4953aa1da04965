//go:build tools

// Package kubernetes pins the Kubernetes release that the test control plane
// is built from. It is a module of its own so that k8s.io/kubernetes and its
// staging replace lines never leak into vnode's own go.mod.
package kubernetes

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
