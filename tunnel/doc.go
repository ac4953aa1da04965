// Package tunnel carries connections from the cloud to nodes that can dial
// out but cannot be dialed: an agent on the node holds a mutually
// authenticated TLS 1.3 session to every server replica, and a server turns
// an authenticated HTTP CONNECT (kube-apiserver's egress selector, metrics
// scrapers) into a yamux stream to the agent serving that node, with
// per-stream flow control so one slow reader stalls only itself. The node a
// session serves is taken from the agent's certificate, never from what the
// agent says.
package tunnel
