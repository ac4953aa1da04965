package local

import (
	"fmt"
	"net"
	"os"

	"github.com/vnode-project/vnode/integration/netns"
)

// nodeNetworkRange is where the node's network namespace takes a /30:
// 198.18.0.0/15 is reserved for network tests (RFC 2544), so it clashes
// with no real network, and it is not loopback, which kube-apiserver will
// not proxy to.
var nodeNetworkRange = &net.IPNet{IP: net.IPv4(198, 18, 0, 0).To4(), Mask: net.CIDRMask(15, 32)}

// withoutNetwork says what a run without the node's network cannot show,
// and why it has none.
func withoutNetwork(why string) string {
	return "# " + why + `, so this run cannot show two things:
#  - the node's own network: its kubelet API stays on 127.0.0.1, which kube-apiserver will not proxy
#    to ("kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary" answers "address not allowed");
#  - the edge tunnel: kube-apiserver reaches the node directly, not through edge-tunnel-server.
# Everything else runs as it would with them.`
}

// nodeNetwork makes, as root, the network namespace the hosted virtual
// nodes run in: a veth pair on the first free /30 of nodeNetworkRange,
// this side its first address (where kube-apiserver, the ECI emulator and
// the tunnel server listen for the node), the namespace its second (the
// node's address, routed from here, so a scraper on this host reaches the
// kubelet API directly). Stop removes both. Without root, or where the
// namespace cannot be made, it says what cannot be shown and carries on
// without (s.Network stays nil).
func (s *System) nodeNetwork() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(s.out, withoutNetwork(`Not root (run "sudo make run" to see them)`))
		return
	}
	subnet, err := netns.FreeSubnet(nodeNetworkRange)
	if err != nil {
		fmt.Fprintln(s.out, withoutNetwork(fmt.Sprintf("No network for the node (%v)", err)))
		return
	}
	fmt.Fprintf(s.out, "# the virtual node's network: a namespace joined to this host by a veth pair on %s/30 (198.18.0.0/15 is reserved for tests)\n", subnet)
	h, err := netns.Create("vnode-local", subnet, s.out)
	if err != nil {
		fmt.Fprintln(s.out, withoutNetwork(fmt.Sprintf("No network for the node (%v)", err)))
		return
	}
	s.stop = append(s.stop, func() {
		if err := h.Remove(); err != nil {
			fmt.Fprintf(s.out, "removing network namespace %s: %v\n", h.Name, err)
		}
	})
	s.Network = h
}

// listenHost is where services the node dials listen: this side of the
// veth pair when there is one, else loopback.
func (s *System) listenHost() string {
	if s.Network != nil {
		return s.Network.HostIP.String()
	}
	return "127.0.0.1"
}
