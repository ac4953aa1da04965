package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// routeDirect: the server dials the target itself, for addresses on the
// cluster's own side that no node claims.
const routeDirect routeKind = "direct"

// kube-apiserver's "cluster" egress carries more than node traffic: calls
// to aggregated API servers (metrics-server behind `kubectl top`) and to
// Service-backed webhooks go there too, to pod or Service addresses on the
// cloud side, which no agent serves. Those the server dials itself, but
// only inside the prefixes an admin names (DirectPrefixes: the cloud
// side's pod and Service networks), so the tunnel never becomes a proxy to
// anywhere kube-apiserver is asked to go. An address a node claims always
// goes to the node: the naming half of the rule comes first.

// ParseDirectPrefixes reads --direct-cidrs: addresses or CIDRs, comma
// separated. A bare address is its own /32 or /128.
func ParseDirectPrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// direct reports whether host is an address the server dials itself.
func (s *Server) direct(host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false // names are never resolved by the server
	}
	a = a.Unmap()
	for _, p := range s.cfg.DirectPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// dialDirect opens host:port from the server, bounded by DialTimeout, and
// returns the HTTP status to answer with on failure.
func (s *Server) dialDirect(ctx context.Context, host string, port int) (net.Conn, int, error) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		s.cfg.Metrics.DialFailures.WithLabelValues("direct").Inc()
		return nil, http.StatusBadGateway, fmt.Errorf("dialing %s directly: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	return c, 0, nil
}
