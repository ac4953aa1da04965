package tunnel

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// routeKind says how a CONNECT reached its node (requests_routed_total).
type routeKind string

const (
	routeOwn     routeKind = "own"     // the node's own session
	routeGateway routeKind = "gateway" // a gateway of the node's network domain
)

// gatewaySession picks the session that carries t's network domain: the
// domain's gateways in node-name order, the first with a live session of
// an identity allowed to serve that gateway node being the active one, the
// others standing by. Name order rather than, say, the oldest session,
// because every server replica then picks the same active gateway (each
// agent holds a session to every replica), so a domain's traffic goes
// through one gateway at a time and an admin can tell which. When the
// active session drops, the next CONNECT finds the next gateway: failover
// needs no election and no timer. A gateway that crashes or restarts
// closes its connection, and the drop is seen at once; one lost silently
// (power cut, a NAT that forgets) is found dead by the first dial it
// leaves unanswered (liveness.go), or the keepalive.
func (s *Server) gatewaySession(t Target) *session {
	for _, g := range s.cfg.Nodes.Gateways(t.Domain) {
		// Checked here again, not trusted from the resolver: a gateway
		// of domain A never carries a node of domain B.
		if !g.Gateway || g.Domain != t.Domain || g.Node == t.Node {
			continue
		}
		if sess, _ := s.ownSession(g); sess != nil && !sess.mux.IsClosed() {
			return sess
		}
	}
	return nil
}

// noGateway completes a refusal for t: why no gateway carried it.
func (s *Server) noGateway(t Target) string {
	if t.Domain == "" {
		return ""
	}
	var names []string
	for _, g := range s.cfg.Nodes.Gateways(t.Domain) {
		if g.Node != t.Node {
			names = append(names, g.Node)
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("; its network domain %s has no gateway (no other Node of it labelled %s=%s)", t.Domain, NetworkGatewayLabel, NetworkGatewayValue)
	}
	return fmt.Sprintf("; no gateway of its network domain %s (%s) has a session here", t.Domain, strings.Join(names, ", "))
}

// gatewayAllows is a gateway agent's own check of a dial the server asks
// for on behalf of another node of its domain, from the agent's own view of
// the Nodes (nodes): the agent's node self must be a gateway, node must be
// in the same network domain, and host one of node's addresses. It keeps a
// compromised or mistaken server from using a gateway to reach anything in
// the edge network but its domain's nodes. Loopback is never allowed here:
// it is the gateway's, not node's.
func gatewayAllows(nodes NodeResolver, self, node, host string) error {
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%s is not an IP address", host)
	}
	if ip.IsLoopback() {
		return fmt.Errorf("%s is this gateway's loopback, not node %s's", host, node)
	}
	me, ok := nodes.Node(self)
	if !ok || !me.Gateway {
		return fmt.Errorf("node %s is not a gateway of a network domain (no %s=%s and %s labels on its Node): it serves only itself",
			self, NetworkGatewayLabel, NetworkGatewayValue, NetworkDomainLabel)
	}
	t, ok := nodes.Node(node)
	if !ok || t.Domain != me.Domain {
		return fmt.Errorf("node %s is not in network domain %s, which gateway %s serves", node, me.Domain, self)
	}
	if !containsNode(nodes.Claimants(host), node) {
		return fmt.Errorf("%s is not an address of node %s", host, node)
	}
	return nil
}

// allowedFor is the agent's check of a dial request: for its own node (or
// an older server that names none), its own addresses and loopback; for
// another node, only as a gateway of that node's domain.
func (a *Agent) allowedFor(req dialRequest) error {
	if req.Node == "" || req.Node == a.node {
		return a.allowed(req.Host, req.Port)
	}
	if a.cfg.Gateway == nil {
		return fmt.Errorf("this agent serves only node %s, not %s (it is not a gateway: edge-tunnel-agent --gateway)", a.node, req.Node)
	}
	if req.Port < 1 || req.Port > 65535 {
		return fmt.Errorf("port %d is invalid", req.Port)
	}
	return gatewayAllows(a.cfg.Gateway, a.node, req.Node, req.Host)
}

// GatewayView is what a gateway agent (AgentConfig.Gateway) checks targets
// against: the Nodes in a network domain, synced before it returns so that
// the first dials are not refused for want of a list. kube must be allowed
// to list and watch Nodes: the gateway's ServiceAccount
// (manifests/tunnel/rbac.yaml), not the kubelet's own credentials, which
// may read only their own Node (the Node authorizer with
// AuthorizeNodeWithSelectors, on since Kubernetes 1.32).
func GatewayView(ctx context.Context, kube *rest.Config) (*NodeIndex, error) {
	client, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("creating the API client for the gateway's view of the Nodes: %w", err)
	}
	// One list first, so that missing rights are an error now rather
	// than an informer retrying forever.
	if _, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: NetworkDomainLabel, Limit: 1}); err != nil {
		return nil, fmt.Errorf("listing the Nodes of network domains: %w", err)
	}
	ix, err := NewDomainNodeIndex(ctx, client, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if !cache.WaitForCacheSync(ctx.Done(), ix.HasSynced) {
		return nil, fmt.Errorf("listing the Nodes of network domains: %w", context.Cause(ctx))
	}
	return ix, nil
}
