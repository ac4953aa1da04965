// Package kubeletapi serves the kubelet API calls virtual-kubelet routes to
// the provider (logs, exec, stats) from ECI: container logs through
// DescribeContainerLog (with follow emulated by polling), exec through
// ExecContainerCommand's WebSocket, and stats from the instances' metrics.
package kubeletapi
