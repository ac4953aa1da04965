package tunnel

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseDirectPrefixes(t *testing.T) {
	got, err := ParseDirectPrefixes([]string{"10.96.0.0/12", " 192.168.1.7 ", "", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.96.0.0/12", "192.168.1.7/32", "fd00::/8"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d: %s, want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.1/8", "pods", "10.0.0.0/33"} {
		if _, err := ParseDirectPrefixes([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: error %v, want one naming it", bad, err)
		}
	}
}

// kube-apiserver's cluster egress also carries calls to aggregated API
// servers and Service-backed webhooks on the cloud side. An address no
// node claims is dialed by the server itself inside --direct-cidrs and
// refused outside them; an address a node claims still goes to the node,
// and a name is never resolved by the server.
func TestDirectRoute(t *testing.T) {
	nodeEcho := newEchoServer(t)                 // 127.0.0.1, claimed by n1
	cloudEcho := newEchoServerOn(t, "127.0.0.2") // a pod on the cloud side
	outside := newEchoServerOn(t, "127.0.0.3")   // not in the prefixes
	e := newEnvWith(t, loopNode("n1"), allow(nodeEcho.port()), func(c *ServerConfig) {
		c.DirectPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/31"), netip.MustParsePrefix("127.0.0.2/32")}
	})
	var dials dialLog
	e.startVNodeAgents(&dials, "n1")

	e.through(net.JoinHostPort("127.0.0.1", strconv.Itoa(nodeEcho.port())), "to the node")
	if dials.count() != 1 || counterValue(e.metrics.Routed.WithLabelValues("own")) != 1 {
		t.Fatalf("a node's address in the direct prefixes went around its agent: %d agent dials", dials.count())
	}

	e.through(net.JoinHostPort("127.0.0.2", strconv.Itoa(cloudEcho.port())), "to the cloud side")
	if dials.count() != 1 || cloudEcho.accepted() != 1 || counterValue(e.metrics.Routed.WithLabelValues("direct")) != 1 {
		t.Fatalf("direct address: %d agent dials, %d accepted, want 1 and 1", dials.count(), cloudEcho.accepted())
	}
	// Counted as the relay ends, which the requester's close starts.
	waitFor(t, 10*time.Second, "direct bytes counted as direct", func() bool {
		return counterValue(e.metrics.Bytes.WithLabelValues("to_direct")) > 0
	})

	for _, target := range []string{
		net.JoinHostPort("127.0.0.3", strconv.Itoa(outside.port())),
		net.JoinHostPort("localhost", strconv.Itoa(cloudEcho.port())),
	} {
		if code, body := e.connectAnswer(target); code != http.StatusNotFound || !strings.Contains(body, "--direct-cidrs") {
			t.Errorf("CONNECT %s: %d %q, want 404 naming --direct-cidrs", target, code, body)
		}
	}
	if outside.accepted() != 0 {
		t.Fatal("the server dialed an address outside its direct prefixes")
	}
}
