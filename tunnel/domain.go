package tunnel

// Network domains and their gateways (Raven's proxy mode): the nodes of one
// network domain (an edge site, a node pool behind one NAT) may reach the
// servers through a gateway, an agent in the domain that carries traffic
// for every node of it, so a domain holds a handful of sessions instead of
// one per node.
//
// Both facts are labels on the Node, under node-restriction.kubernetes.io/:
//
//   - NetworkDomainLabel=<domain> puts a node in a domain;
//   - NetworkGatewayLabel=true on a node of that domain lets the agent
//     serving that node carry the domain's traffic (edge-tunnel-agent
//     --gateway).
//
// A node cannot write either about itself: NodeRestriction keeps kubelets
// (system:node:<name>) from adding, changing or removing labels under that
// prefix, and manifests/vnode's vnode-restriction policy does the same for
// virtual nodes (system:vnode:<name>). Only an admin (or a controller the
// admin trusts) places nodes in domains and names gateways.
//
// Why labels and not a certificate of its own for gateways: a gateway is an
// ordinary node of its domain and already has a certificate naming it (its
// kubelet's, or its virtual node's). The labels are read from the Node as it
// is when each CONNECT is routed, as the node-kind rule already is, so
// electing another gateway, retiring one, or moving a node to another
// domain takes effect on the next request, with no certificate to issue and
// none to revoke (a certificate naming a domain stays valid until it
// expires, whatever the admin decides meanwhile). It needs no new signer or
// approver, and an identity of domain A can never carry domain B's traffic
// because the rule only ever looks for gateways among the Nodes labelled B.
const (
	NetworkDomainLabel  = "node-restriction.kubernetes.io/network-domain"
	NetworkGatewayLabel = "node-restriction.kubernetes.io/network-domain-gateway"
	// NetworkGatewayValue is the one value that makes a node a gateway.
	NetworkGatewayValue = "true"
)

// domainOf reads a Node's labels: its network domain ("" if none) and
// whether it is a gateway of it (never without a domain).
func domainOf(labels map[string]string) (domain string, gateway bool) {
	domain = labels[NetworkDomainLabel]
	return domain, domain != "" && labels[NetworkGatewayLabel] == NetworkGatewayValue
}
