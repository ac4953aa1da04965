package tunnel

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

// nodeObj is a Node as the API server would give it to the index.
func nodeObj(name string, virtual bool, addrs ...corev1.NodeAddress) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if virtual {
		n.Labels[identity.NodeTypeLabel] = identity.NodeTypeVirtual
	}
	n.Status.Addresses = addrs
	return n
}

func internalIP(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

// connectAnswer sends CONNECT target and returns the status and, when
// refused, the body.
func (e *env) connectAnswer(target string) (int, string) {
	e.t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.proxyAddr, e.requester)
	if err != nil {
		e.t.Fatalf("dialing the proxy: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		e.t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// through CONNECTs to target and round-trips msg, or fails the test.
func (e *env) through(target, msg string) {
	e.t.Helper()
	status, c := e.connect(target)
	if status != http.StatusOK {
		e.t.Fatalf("CONNECT %s: status %d", target, status)
	}
	roundTrip(e.t, c, msg)
}

// startVNodeAgents runs a virtual node's agent for each node, its dials
// tagged with the node's name, and waits for their sessions.
func (e *env) startVNodeAgents(dials *dialLog, nodes ...string) {
	e.t.Helper()
	for _, n := range nodes {
		e.startAgent(e.ca.pair(e.t, "system:vnode:"+n, "system:vnodes"), dials.tag(n))
		e.waitSession(n)
	}
}

// dialLog records which agent dialed what, to tell sessions apart.
type dialLog struct {
	mu sync.Mutex
	by []string
}

func (d *dialLog) tag(tag string) agentOpt { return tagDialer(tag, &d.mu, &d.by) }

func (d *dialLog) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.by) == 0 {
		return ""
	}
	return d.by[len(d.by)-1]
}

func (d *dialLog) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.by)
}

// Two nodes list the same address (edge sites behind NAT, or a node that
// wrote another's address into its own status). Each is reached by name;
// the address is refused naming both, and counted, never guessed. Before,
// the node indexed last took every CONNECT to the address.
func TestAddressClaimedByTwoNodesIsRefused(t *testing.T) {
	echo := newEchoServer(t)
	ix := newNodeIndex()
	ix.upsert(nodeObj("victim", true, internalIP("127.0.0.1")))
	ix.upsert(nodeObj("thief", true, internalIP("127.0.0.1")))
	e := newEnv(t, ix, allow(echo.port()))
	var dials dialLog
	e.startVNodeAgents(&dials, "victim", "thief")
	port := strconv.Itoa(echo.port())
	for _, n := range []string{"victim", "thief", "victim"} {
		e.through(n+":"+port, "by name")
		if got := dials.last(); got != n {
			t.Fatalf("CONNECT %s was carried by %s's agent", n, got)
		}
	}
	before := dials.count()
	status, body := e.connectAnswer("127.0.0.1:" + port)
	if status != http.StatusConflict || !strings.Contains(body, "thief") || !strings.Contains(body, "victim") {
		t.Fatalf("CONNECT by the shared address: status %d %q, want 409 naming both nodes", status, body)
	}
	if dials.count() != before {
		t.Fatalf("the shared address was dialed by %s's agent", dials.last())
	}
	if got := counterValue(e.metrics.Refused.WithLabelValues("address_clash")); got != 1 {
		t.Fatalf("address_clash refusals counted %v, want 1", got)
	}

	// Once the thief drops the address, the victim has it alone again.
	ix.upsert(nodeObj("thief", true, internalIP("127.0.0.2")))
	e.through("127.0.0.1:"+port, "by address")
	if got := dials.last(); got != "victim" {
		t.Fatalf("the victim's address was carried by %s's agent", got)
	}
}

// A node cannot take another's name by listing it as one of its addresses:
// a name always routes to the node of that name. An address that is also
// a node's name (an IP-named node) is claimed by that node too.
func TestNodeNameCannotBeClaimedAsAnAddress(t *testing.T) {
	echo := newEchoServer(t)
	ix := newNodeIndex()
	ix.upsert(nodeObj("victim", true, internalIP("127.0.0.1")))
	ix.upsert(nodeObj("thief", true, internalIP("127.0.0.2"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "victim"}))
	ix.upsert(nodeObj("127.0.0.2", true))
	e := newEnv(t, ix, allow(echo.port()))
	var dials dialLog
	e.startVNodeAgents(&dials, "victim", "thief")
	port := strconv.Itoa(echo.port())
	e.through("victim:"+port, "by name")
	if got := dials.last(); got != "victim" {
		t.Fatalf("CONNECT victim was carried by %s's agent", got)
	}
	if status, body := e.connectAnswer("127.0.0.2:" + port); status != http.StatusConflict || !strings.Contains(body, "thief") || !strings.Contains(body, "127.0.0.2") {
		t.Fatalf("an address that is also a node's name: status %d %q, want 409 naming both", status, body)
	}
}

// A virtual node's certificate (system:vnode:X, which vnode-approver
// signs for any name without a real Node) may not serve a real node X,
// whose traffic only its kubelet identity (system:node:X) carries; and a
// session of one identity never displaces another's. Before, both
// prefixes mapped to one key and the newest session took the node.
func TestVNodeIdentityCannotServeRealNode(t *testing.T) {
	echo := newEchoServer(t)
	ix := newNodeIndex()
	ix.upsert(nodeObj("edge1", false, internalIP("127.0.0.1")))
	ix.upsert(nodeObj("vn1", true, internalIP("127.0.0.2")))
	e := newEnv(t, ix, allow(echo.port()))
	port := strconv.Itoa(echo.port())
	var dials dialLog

	// The impostor alone: its session exists but may not carry edge1.
	e.startAgent(e.ca.pair(t, "system:vnode:edge1", "system:vnodes"), dials.tag("impostor"))
	e.waitSession("edge1")
	for _, host := range []string{"edge1", "127.0.0.1"} {
		status, body := e.connectAnswer(host + ":" + port)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "system:vnode:edge1") {
			t.Fatalf("CONNECT %s through a vnode identity: status %d %q, want 503", host, status, body)
		}
	}
	if dials.count() != 0 || echo.accepted() != 0 {
		t.Fatal("the impostor's agent was asked to dial")
	}
	if got := counterValue(e.metrics.Refused.WithLabelValues("identity_not_allowed")); got != 2 {
		t.Fatalf("identity_not_allowed refusals %v, want 2", got)
	}

	// The real node's own identity carries it, and a newer session of the
	// impostor's identity does not displace it.
	e.startAgent(e.ca.pair(t, "system:node:edge1", "system:nodes"), dials.tag("kubelet"))
	waitFor(t, 10*time.Second, "the kubelet identity's session", func() bool {
		return counterValue(e.metrics.Sessions.WithLabelValues("edge1", identity.NodeUserPrefix)) == 1
	})
	e.startAgent(e.ca.pair(t, "system:vnode:edge1", "system:vnodes"), dials.tag("impostor"))
	waitFor(t, 10*time.Second, "the second impostor session to replace the first", func() bool {
		return counterValue(e.metrics.Replacements) == 1
	})
	for range 3 {
		e.through("edge1:"+port, "real")
		if got := dials.last(); got != "kubelet" {
			t.Fatalf("edge1 carried by the %s's agent", got)
		}
	}

	// The other way round: a kubelet identity for a virtual node's name
	// carries nothing for it.
	e.startAgent(e.ca.pair(t, "system:node:vn1", "system:nodes"), dials.tag("kubelet-vn1"))
	e.waitSession("vn1")
	if status, body := e.connectAnswer("vn1:" + port); status != http.StatusServiceUnavailable || !strings.Contains(body, "system:node:vn1") {
		t.Fatalf("CONNECT vn1 through a kubelet identity: status %d %q, want 503", status, body)
	}
}

// A virtual node's certificate may be approved before its Node exists:
// the Node's label is looked at when a request is routed, not when the
// session came.
func TestNodeLabelCheckedWhenRouting(t *testing.T) {
	echo := newEchoServer(t)
	ix := newNodeIndex()
	e := newEnv(t, ix, allow(echo.port()))
	port := strconv.Itoa(echo.port())
	e.startAgent(e.ca.pair(t, "system:vnode:late", "system:vnodes"))
	e.waitSession("late")
	if status, _ := e.connectAnswer("late:" + port); status != http.StatusNotFound {
		t.Fatalf("before the Node exists: status %d, want 404", status)
	}
	ix.upsert(nodeObj("late", false, internalIP("127.0.0.1")))
	if status, _ := e.connectAnswer("late:" + port); status != http.StatusServiceUnavailable {
		t.Fatalf("a real Node named late: status %d, want 503", status)
	}
	ix.upsert(nodeObj("late", true, internalIP("127.0.0.1")))
	e.through("late:"+port, "virtual")
	ix.upsert(nodeObj("late", false, internalIP("127.0.0.1")))
	if status, _ := e.connectAnswer("late:" + port); status != http.StatusServiceUnavailable {
		t.Fatalf("label removed: status %d, want 503", status)
	}
}

// One address written two ways is one address: both writers claim it.
func TestNodeIndexComparesAddressesCanonically(t *testing.T) {
	ix := newNodeIndex()
	ix.upsert(nodeObj("n1", true, internalIP("fd00::1")))
	ix.upsert(nodeObj("n2", true, internalIP("fd00:0::1")))
	ix.upsert(nodeObj("n3", true, internalIP("::ffff:10.0.0.1")))
	ix.upsert(nodeObj("n4", true, internalIP("10.0.0.1"), corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "10.0.0.1"}))
	names := func(addr string) string {
		var out []string
		for _, c := range ix.Claimants(addr) {
			out = append(out, c.Node)
		}
		return strings.Join(out, ",")
	}
	for addr, want := range map[string]string{"fd00:0:0::1": "n1,n2", "10.0.0.1": "n3,n4", "::ffff:10.0.0.1": "n3,n4", "10.0.0.2": ""} {
		if got := names(addr); got != want {
			t.Errorf("claimants of %s: %q, want %q", addr, got, want)
		}
	}
	ix.delete("n1")
	if got := names("fd00::1"); got != "n2" {
		t.Errorf("after n1 is deleted, claimants of fd00::1: %q", got)
	}
}
