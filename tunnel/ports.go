package tunnel

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ConfigMap keys of kube-system/edge-tunnel-server-cfg, as the seeds name them.
const (
	ConfigMapNamespace  = "kube-system"
	ConfigMapName       = "edge-tunnel-server-cfg"
	KeyHTTPProxyPorts   = "http-proxy-ports"
	KeyHTTPSProxyPorts  = "https-proxy-ports"
	KeyLocalhostPorts   = "localhost-proxy-ports"
	KeyDNATPortsPair    = "dnat-ports-pair"
	insecureProxyPort   = 10264 // the right side every dnat-ports-pair must name
	defaultLocalhostVal = "10250, 10255, 10266, 10267"
)

// kubeletPorts are always proxied (the kubelet API and its read-only port),
// whatever the ConfigMap says; a node's own advertised kubelet port is too.
var kubeletPorts = []int{10250, 10255}

// PortClass says how a port on a node is reached.
type PortClass int

const (
	// PortRefused ports are not proxied.
	PortRefused PortClass = iota
	// PortNode ports are dialed on the node's address (TLS, if any, is end
	// to end between requester and target).
	PortNode
	// PortHTTP ports may also be used as an HTTP forward proxy target.
	PortHTTP
	// PortLocalhost ports are dialed on 127.0.0.1 on the node.
	PortLocalhost
)

// Ports is the port policy: which ports of a node may be reached and how.
// The zero value refuses everything but the kubelet ports.
type Ports struct {
	HTTP      []int
	HTTPS     []int
	Localhost []int
	// Warnings are non-fatal remarks made while parsing (deprecated keys).
	Warnings []string
}

// DefaultPorts is the policy without a ConfigMap.
func DefaultPorts() Ports {
	p, _ := ParsePorts(nil)
	return p
}

// ParsePorts reads the ConfigMap's data. A malformed value is an error: the
// caller keeps the last good policy rather than apply half of a bad one.
func ParsePorts(data map[string]string) (Ports, error) {
	var p Ports
	var err error
	// Every list the admin set, by key, to refuse a port set twice: which
	// class wins would otherwise be decided silently by Class's order.
	// Defaults are not compared (localhost-proxy-ports' default includes
	// 10250, which an admin may well list as an https port).
	var dnat []int
	if p.HTTP, err = parsePortList(data[KeyHTTPProxyPorts]); err != nil {
		return Ports{}, fmt.Errorf("%s: %w", KeyHTTPProxyPorts, err)
	}
	if p.HTTPS, err = parsePortList(data[KeyHTTPSProxyPorts]); err != nil {
		return Ports{}, fmt.Errorf("%s: %w", KeyHTTPSProxyPorts, err)
	}
	local, ok := data[KeyLocalhostPorts]
	if !ok {
		local = defaultLocalhostVal
	}
	if p.Localhost, err = parsePortList(local); err != nil {
		return Ports{}, fmt.Errorf("%s: %w", KeyLocalhostPorts, err)
	}
	if v := strings.TrimSpace(data[KeyDNATPortsPair]); v != "" {
		p.Warnings = append(p.Warnings, KeyDNATPortsPair+" is deprecated: use "+KeyHTTPProxyPorts)
		for _, pair := range strings.Split(v, ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			l, r, found := strings.Cut(pair, "=")
			if !found {
				return Ports{}, fmt.Errorf("%s: %q is not <port>=%d", KeyDNATPortsPair, pair, insecureProxyPort)
			}
			lp, err := parsePort(l)
			if err != nil {
				return Ports{}, fmt.Errorf("%s: %q: %w", KeyDNATPortsPair, pair, err)
			}
			rp, err := parsePort(r)
			if err != nil || rp != insecureProxyPort {
				return Ports{}, fmt.Errorf("%s: %q: the right side must be %d (the server's HTTP port)", KeyDNATPortsPair, pair, insecureProxyPort)
			}
			dnat = appendUnique(dnat, lp)
		}
	}
	type keyed struct {
		key   string
		ports []int
	}
	set := []keyed{{KeyHTTPProxyPorts, p.HTTP}, {KeyHTTPSProxyPorts, p.HTTPS}, {KeyDNATPortsPair, dnat}}
	if _, ok := data[KeyLocalhostPorts]; ok {
		set = append(set, keyed{KeyLocalhostPorts, p.Localhost})
	}
	for i, a := range set {
		for _, b := range set[i+1:] {
			for _, port := range a.ports {
				if contains(b.ports, port) {
					return Ports{}, fmt.Errorf("port %d is in both %s and %s: a port has one way to be reached", port, a.key, b.key)
				}
			}
		}
	}
	for _, lp := range dnat {
		p.HTTP = appendUnique(p.HTTP, lp)
	}
	for k := range data {
		switch k {
		case KeyHTTPProxyPorts, KeyHTTPSProxyPorts, KeyLocalhostPorts, KeyDNATPortsPair:
		default:
			p.Warnings = append(p.Warnings, "unknown key "+strconv.Quote(k)+" ignored")
		}
	}
	sort.Ints(p.HTTP)
	sort.Ints(p.HTTPS)
	sort.Ints(p.Localhost)
	return p, nil
}

// Class says how port is reached on a node whose kubelet listens on
// kubeletPort (0 if unknown).
func (p Ports) Class(port, kubeletPort int) PortClass {
	switch {
	case contains(p.Localhost, port):
		return PortLocalhost
	case contains(p.HTTP, port):
		return PortHTTP
	case contains(p.HTTPS, port), contains(kubeletPorts, port), port == kubeletPort && port != 0:
		return PortNode
	}
	return PortRefused
}

func (p Ports) String() string {
	return fmt.Sprintf("http=%v https=%v localhost=%v", p.HTTP, p.HTTPS, p.Localhost)
}

func parsePortList(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := parsePort(f)
		if err != nil {
			return nil, err
		}
		out = appendUnique(out, n)
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", strings.TrimSpace(s))
	}
	return n, nil
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func appendUnique(s []int, v int) []int {
	if contains(s, v) {
		return s
	}
	return append(s, v)
}
