package vnode

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/tunnel"
)

// TunnelOptions run the edge tunnel agent inside the node's process: for a
// node the cluster cannot dial, whose kubelet API the API server reaches
// through the tunnel servers. The node is then Ready only while the agent
// holds a session.
type TunnelOptions struct {
	// Server is host:port of the tunnel servers; the host may resolve to
	// every replica (a headless Service), the agent holds a session to each.
	Server string
	// ServerName is the name the servers' certificate carries (default:
	// Server's host).
	ServerName string
	// CAFile verifies the servers.
	CAFile string
	// CertFile and KeyFile are the node's own client certificate
	// (system:vnode:<node>): the servers route to this node by it. KeyFile
	// may be empty when CertFile holds both (client-go's certificate
	// store). Both are re-read when they change (rotation).
	CertFile, KeyFile string
	// Addresses the agent may dial besides loopback (default: this host's
	// addresses).
	Addresses []string
	// Dial (to the servers), DialTarget (to the kubelet API) and Resolve
	// default to the network's; tests dial from another namespace.
	Dial, DialTarget tunnel.DialFunc
	Resolve          func(ctx context.Context, host string) ([]string, error)
	// MinBackoff and MaxBackoff bound reconnect waits (default 1s, 30s).
	MinBackoff, MaxBackoff time.Duration
	// CheckInterval is how often the Ready condition looks at the
	// session (default 1s).
	CheckInterval time.Duration
}

// newTunnelAgent builds the agent and checks that its certificate names
// this node: the servers route by the certificate, so any other would
// leave this node unreachable while it reports Ready.
func newTunnelAgent(o *TunnelOptions, nodeName string, log *logrus.Entry) (*tunnel.Agent, error) {
	pair, err := certs.NewKeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tunnel client certificate: %w", err)
	}
	ca, err := certs.NewCABundle(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tunnel CA: %w", err)
	}
	a, err := tunnel.NewAgent(tunnel.AgentConfig{
		Server: o.Server, ServerName: o.ServerName, Cert: pair, CA: ca, Addresses: o.Addresses,
		Dial: o.Dial, DialTarget: o.DialTarget, Resolve: o.Resolve,
		MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, Log: log.WithField("component", "tunnel-agent"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the tunnel agent: %w", err)
	}
	if a.Node() != nodeName {
		return nil, fmt.Errorf("the tunnel certificate %s names node %q, not %q", o.CertFile, a.Node(), nodeName)
	}
	return a, nil
}
