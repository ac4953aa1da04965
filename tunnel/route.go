package tunnel

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
)

const reasonUnknownNode = "unknown_node"

// refusal is why the routing rule carries a CONNECT nowhere: the status
// answered, the reason counted (requests_refused_total) and the message.
type refusal struct {
	code   int
	reason string
	msg    string
}

// route is the tunnel's one routing rule: which node a CONNECT host names
// and which session may carry it there.
//
//   - A host that is a node's name (not an IP address) names that node,
//     whatever addresses other nodes list: routing by name always works.
//   - Otherwise the host names the node that lists it among its addresses
//     (a node of that name, if the host is an IP address, claims it too),
//     but only if exactly one node does. Two claimants are refused, naming
//     both, never guessed: NAT-ed edge sites reuse addresses, and a node
//     may write any address into its own status.
//   - An address no node claims is dialed by the server itself only if
//     it lies in DirectPrefixes (direct.go), else refused.
//   - The node is then carried only by a session allowed to serve it
//     (sessionFor): its own, else a gateway of its network domain; or
//     refused.
func (s *Server) route(host string) (Target, *session, routeKind, *refusal) {
	t, r := s.nodeFor(host)
	if r != nil && r.reason == reasonUnknownNode && s.direct(host) {
		return Target{}, nil, routeDirect, nil // direct.go
	}
	if r != nil {
		return Target{}, nil, "", r
	}
	sess, via, r := s.sessionFor(t)
	if r != nil {
		return t, nil, "", r
	}
	return t, sess, via, nil
}

// nodeFor applies the naming half of the rule.
func (s *Server) nodeFor(host string) (Target, *refusal) {
	isIP := net.ParseIP(host) != nil
	byName, named := s.cfg.Nodes.Node(host)
	if named && !isIP {
		return byName, nil
	}
	claimants := s.cfg.Nodes.Claimants(host)
	if named && !containsNode(claimants, host) {
		claimants = append(claimants, byName)
	}
	switch len(claimants) {
	case 0:
		return Target{}, &refusal{http.StatusNotFound, reasonUnknownNode, fmt.Sprintf("%s is not a known node name or address (nor in the server's --direct-cidrs)", host)}
	case 1:
		return claimants[0], nil
	}
	names := make([]string, len(claimants))
	for i, c := range claimants {
		names[i] = c.Node
	}
	slices.Sort(names)
	return Target{}, &refusal{http.StatusConflict, "address_clash", fmt.Sprintf(
		"address %s is claimed by nodes %s: refusing to guess; reach them by node name (kube-apiserver --kubelet-preferred-address-types=Hostname,...)",
		host, strings.Join(names, " and "))}
}

// sessionFor applies the carrying half: the session allowed to serve t,
// in this order.
//
//  1. t's own session, of the identity t's kind requires (system:vnode:<name>
//     for a Node labelled type=virtual-kubelet, system:node:<name>
//     otherwise), checked against the Node as it is now, not as it was when
//     the session came: a virtual node's certificate may be approved before
//     its Node exists.
//  2. Else, if t is in a network domain, the session of one of that
//     domain's gateways (gateway.go): the gateways are the Nodes labelled
//     as such now, each carried by its own session as in 1.
//  3. Else a refusal saying which sessions exist and why none may serve t.
func (s *Server) sessionFor(t Target) (*session, routeKind, *refusal) {
	sess, others := s.ownSession(t)
	if sess != nil {
		return sess, routeOwn, nil
	}
	if t.Domain != "" {
		if sess := s.gatewaySession(t); sess != nil {
			return sess, routeGateway, nil
		}
	}
	if len(others) > 0 {
		return nil, "", &refusal{http.StatusServiceUnavailable, "identity_not_allowed", fmt.Sprintf(
			"node %s has no tunnel session on this server from an identity allowed to serve it (%s)%s", t.Node, strings.Join(others, "; "), s.noGateway(t))}
	}
	return nil, "", &refusal{http.StatusServiceUnavailable, "no_session", fmt.Sprintf("node %s has no tunnel session on this server%s", t.Node, s.noGateway(t))}
}

// ownSession returns t's own session of the identity allowed to serve it,
// or what other identities' sessions for t there are, for the refusal.
func (s *Server) ownSession(t Target) (*session, []string) {
	var others []string
	for _, id := range s.cfg.Identities {
		sess := s.reg.get(sessionKey{node: t.Node, identity: id.Prefix})
		switch {
		case sess == nil:
		case id.Virtual == t.Virtual:
			return sess, nil
		default:
			others = append(others, fmt.Sprintf("%s%s may only serve %s", id.Prefix, t.Node, id.kindOf()))
		}
	}
	return nil, others
}

func containsNode(ts []Target, name string) bool {
	for _, t := range ts {
		if t.Node == name {
			return true
		}
	}
	return false
}
