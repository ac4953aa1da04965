package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/identity"
	tun "github.com/vnode-project/vnode/tunnel"
)

// domainPort is the kubelet port of the domains' nodes (the nodes of the
// first subtest hold 10250 on the same address).
const domainPort = 10251

// gatewayRun is a gateway agent (edge-tunnel-agent --gateway) in its
// domain's network namespace, with the node identity of its gateway node
// and its own view of the domain's Nodes through the API server, as
// manifests/tunnel's gateway DaemonSet runs it; it counts the dials it
// makes and keeps its connections to the replicas, to kill it.
type gatewayRun struct {
	*agentRun
	dials atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
}

func (e *env) startGateway(ctx context.Context, t *testing.T, h *netns.Host, node string) *gatewayRun {
	t.Helper()
	user := identity.NodeUserPrefix + node
	vctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	// The kubelet's own credentials may read only its own Node: refused,
	// at once and saying so.
	kubelet, err := e.cp.UserConfig(user, identity.NodesGroup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tun.GatewayView(vctx, kubelet); !apierrors.IsForbidden(err) {
		t.Fatalf("the gateway's view of the Nodes as %s: %v; want Forbidden", user, err)
	}
	// The DaemonSet's ServiceAccount may (manifests/tunnel/rbac.yaml).
	sa, err := e.cp.UserConfig("system:serviceaccount:kube-system:edge-tunnel-gateway", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		t.Fatal(err)
	}
	view, err := tun.GatewayView(vctx, sa)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayRun{}
	g.agentRun = e.startAgentWith(t, h, node, e.clientCert(t, user, identity.NodesGroup), func(c *tun.AgentConfig) {
		c.Gateway = view
		c.Addresses = []string{h.IP.String()}
		c.Log = c.Log.WithField("gateway", node)
		toServer, toTarget := c.Dial, c.DialTarget
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := toServer(ctx, network, addr)
			if err == nil {
				g.mu.Lock()
				g.conns = append(g.conns, conn)
				g.mu.Unlock()
			}
			return conn, err
		}
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			g.dials.Add(1)
			return toTarget(ctx, network, addr)
		}
	})
	return g
}

// kill ends the gateway as a crash or a power cut would: its connections
// to the replicas are cut (no go-away, no drain), then it stops.
func (g *gatewayRun) kill() {
	g.mu.Lock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.mu.Unlock()
	g.stop()
}

// testNetworkDomains is Raven's proxy mode on the real control plane: two
// network domains (the two edge hosts' namespaces) whose nodes share one
// address, no agent on those nodes, and in each domain two gateway agents
// (active and standby).
//
//   - `kubectl logs` and `exec` reach each node by name through its
//     domain's active gateway; the standby dials nothing.
//   - Neither a node nor a gateway can put itself in another domain or
//     make itself a gateway: the API server refuses (NodeRestriction for
//     kubelet identities, vnode-restriction for virtual nodes).
//   - Killing the active gateway: the next request goes through the
//     standby. Taking the standby's label away stops it carrying the
//     domain at once; giving it back restores it.
//   - With domain B's gateways gone, domain A's gateway, which could dial
//     B's node's address (it is A's node's too), never carries B's
//     traffic: refused, and it dials nothing.
func (e *env) testNetworkDomains(ctx context.Context, t *testing.T, edgeB *netns.Host, egress *tls.Config) {
	admin := e.cp.Client
	domains := []struct {
		name, node, pod string
		host            *netns.Host
		gateways        []string // name order: the first is active
	}{
		{"a", "vn-dom-a", "in-dom-a", e.edge, []string{"gw-a1", "gw-a2"}},
		{"b", "vn-dom-b", "in-dom-b", edgeB, []string{"gw-b1", "gw-b2"}},
	}
	inDomain := func(d string) string {
		return fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, tun.NetworkDomainLabel, d)
	}
	gws := map[string]*gatewayRun{}
	for _, d := range domains {
		// An admin labels the gateway nodes (their kubelets would have
		// registered them) and the domain's node.
		for _, gw := range d.gateways {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: gw, Labels: map[string]string{
				tun.NetworkDomainLabel: d.name, tun.NetworkGatewayLabel: tun.NetworkGatewayValue}}}
			if _, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		e.startNodeOn(t, d.host, nodeIP, d.node, domainPort, nil)
		if _, err := admin.CoreV1().Nodes().Patch(ctx, d.node, types.MergePatchType, []byte(inDomain(d.name)), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, gw := range d.gateways {
			gws[gw] = e.startGateway(ctx, t, d.host, gw)
		}
	}
	waitFor(ctx, t, "every gateway's session on both replicas", func() bool {
		for gw := range gws {
			if !e.server.cur.HasSession(gw) || !e.serverB.cur.HasSession(gw) {
				return false
			}
		}
		return true
	})
	routed := func() float64 {
		return testutil.ToFloat64(e.server.cur.Metrics().Routed.WithLabelValues("gateway")) +
			testutil.ToFloat64(e.serverB.cur.Metrics().Routed.WithLabelValues("gateway"))
	}
	before := routed()
	logs := func(pod string) (string, error) {
		out, err := e.cp.Kubectl(ctx, "-n", "domains", "logs", pod).CombinedOutput()
		return string(out), err
	}
	for _, d := range domains {
		e.runPod(ctx, t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: d.pod, Namespace: "domains"},
			Spec: corev1.PodSpec{NodeName: d.node, Containers: []corev1.Container{{Name: "main", Image: "busybox",
				Command: []string{"/bin/sh", "-c", "echo i-am-in-domain-" + d.name + "; sleep 3600"}}}}})
		waitFor(ctx, t, "kubectl logs of the pod in domain "+d.name, func() bool {
			out, err := logs(d.pod)
			return err == nil && strings.Contains(out, "i-am-in-domain-"+d.name)
		})
		out, err := e.cp.Kubectl(ctx, "-n", "domains", "exec", d.pod, "--", "/bin/sh", "-c", "echo exec-in-"+d.name+"-$((6*7))").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "exec-in-"+d.name+"-42") {
			t.Fatalf("kubectl exec in the pod in domain %s: %v\n%s", d.name, err, out)
		}
		active, standby := gws[d.gateways[0]], gws[d.gateways[1]]
		if active.dials.Load() == 0 || standby.dials.Load() != 0 {
			t.Fatalf("domain %s: the active gateway dialed %d times, the standby %d; want the active only",
				d.name, active.dials.Load(), standby.dials.Load())
		}
	}
	if routed() <= before {
		t.Fatal("no request counted as routed through a gateway")
	}

	// The domain and the gateway role are the admin's: no node can move
	// itself to another domain or make itself a gateway, whether a
	// kubelet identity (NodeRestriction) or a virtual node
	// (vnode-restriction). edge-a3 is a kubelet's node in domain a.
	edgeA3 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a3", Labels: map[string]string{tun.NetworkDomainLabel: "a"}}}
	if _, err := admin.CoreV1().Nodes().Create(ctx, edgeA3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	makeGateway := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, tun.NetworkGatewayLabel, tun.NetworkGatewayValue)
	kubeletOf := func(n string) (string, string) { return identity.NodeUserPrefix + n, identity.NodesGroup }
	vnodeOf := func(n string) (string, string) { return identity.VNodeUser(n), identity.VNodesGroup }
	for _, c := range []struct {
		node  string
		as    func(string) (string, string)
		patch string
	}{
		{"gw-a2", kubeletOf, inDomain("b")},
		{"edge-a3", kubeletOf, makeGateway},
		{"vn-dom-a", vnodeOf, inDomain("b")},
		{"vn-dom-a", vnodeOf, makeGateway},
	} {
		user, group := c.as(c.node)
		cfg, err := e.cp.UserConfig(user, group)
		if err != nil {
			t.Fatal(err)
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.CoreV1().Nodes().Patch(ctx, c.node, types.MergePatchType, []byte(c.patch), metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "node-restriction.kubernetes.io") {
			t.Fatalf("%s patching its own Node with %s: %v; want Forbidden for the node-restriction.kubernetes.io/ label", user, c.patch, err)
		}
		t.Logf("%s: %v", user, err)
	}

	// The active gateway of domain A dies: the next request goes through
	// the standby.
	a1, a2 := gws["gw-a1"], gws["gw-a2"]
	killed, standbyDials := time.Now(), a2.dials.Load()
	a1.kill()
	waitFor(ctx, t, "gw-a1's sessions to end", func() bool {
		return !e.server.cur.HasSession("gw-a1") && !e.serverB.cur.HasSession("gw-a1")
	})
	if out, err := logs("in-dom-a"); err != nil || !strings.Contains(out, "i-am-in-domain-a") {
		t.Fatalf("kubectl logs in domain a after its active gateway died: %v\n%s", err, out)
	}
	t.Logf("failover: the first request through the standby answered %s after the active gateway died", time.Since(killed).Round(time.Millisecond))
	if a2.dials.Load() == standbyDials {
		t.Fatal("the standby gateway of domain a did not carry the request")
	}

	// The role is the admin's to take back, at once: without its label
	// gw-a2's session carries nothing but its own node; relabelled, it
	// carries the domain again.
	domainA := net.JoinHostPort("vn-dom-a", fmt.Sprint(domainPort))
	connectA := func() (int, string) {
		status, body, err := connectAnswer(ctx, e.server.proxyAddr, egress, domainA)
		if err != nil {
			t.Fatal(err)
		}
		return status, body
	}
	setGateway := func(v string) {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, tun.NetworkGatewayLabel, v)
		if _, err := admin.CoreV1().Nodes().Patch(ctx, "gw-a2", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setGateway("null")
	waitFor(ctx, t, "vn-dom-a refused once gw-a2 is no gateway", func() bool {
		status, body := connectA()
		return status == http.StatusServiceUnavailable && strings.Contains(body, "no gateway of its network domain a (gw-a1) has a session")
	})
	setGateway(fmt.Sprintf("%q", tun.NetworkGatewayValue))
	waitFor(ctx, t, "vn-dom-a carried again once gw-a2 is relabelled", func() bool {
		status, _ := connectA()
		return status == http.StatusOK
	})

	// Domain B's gateways go. Domain A's remaining gateway could reach
	// vn-dom-b's address, but it is A's own node's there: B's traffic is
	// refused, never carried by A's gateway.
	gws["gw-b1"].kill()
	gws["gw-b2"].kill()
	waitFor(ctx, t, "domain b's gateway sessions to end", func() bool {
		return !e.server.cur.HasSession("gw-b1") && !e.server.cur.HasSession("gw-b2") &&
			!e.serverB.cur.HasSession("gw-b1") && !e.serverB.cur.HasSession("gw-b2")
	})
	aDials := a2.dials.Load()
	status, body, err := connectAnswer(ctx, e.server.proxyAddr, egress, net.JoinHostPort("vn-dom-b", fmt.Sprint(domainPort)))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "domain b") {
		t.Fatalf("CONNECT vn-dom-b with only domain a's gateway connected: %d %q; want 503", status, body)
	}
	out, err := logs("in-dom-b")
	if err == nil || strings.Contains(out, "i-am-in-domain") {
		t.Fatalf("kubectl logs in domain b with only domain a's gateway connected: %v\n%s", err, out)
	}
	t.Logf("kubectl logs in domain b without its gateways: %s", strings.TrimSpace(out))
	if a2.dials.Load() != aDials {
		t.Fatal("domain a's gateway dialed for domain b")
	}
}
