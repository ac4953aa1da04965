//go:build tools

// Package metricsserver pins the metrics-server release that `make run`
// serves the resource metrics API (kubectl top) with. It is a module of its
// own, like the control plane's, so that metrics-server's dependencies
// (Prometheus, an older k8s.io) never enter vnode's own go.mod.
package metricsserver

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
