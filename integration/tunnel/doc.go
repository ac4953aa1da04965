// Package tunnel is the edge tunnel's end-to-end test: a virtual node
// whose kubelet API the API server cannot dial, reached by the real
// kubectl through kube-apiserver's egress selector, the tunnel server and
// the agent that dialed out from the node's network namespace.
package tunnel
