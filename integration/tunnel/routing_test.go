package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/identity"
)

// secondEdgeSubnet is the second edge host's link (newEnv's is 60, the
// replicas' 62).
const secondEdgeSubnet = 63

// TestRoutingWhenNodesShareAnAddress: two edge sites behind NAT, each with
// a node whose InternalIP is the same private address, in two network
// namespaces.
//
//   - kube-apiserver routing by name (--kubelet-preferred-address-types=
//     Hostname,...) reaches each: `kubectl logs` of a pod on each node
//     comes from its own node.
//   - A CONNECT by the shared address is refused naming both nodes, and
//     counted. Before, the node whose Node was updated last took it.
//   - A virtual node's certificate (system:vnode:X) cannot serve a real
//     node X, nor displace the session of X's kubelet identity; the
//     Node's label is judged when routing, as it is then.
//   - Network domains whose nodes share the address, each reached through
//     its gateways (testNetworkDomains).
func TestRoutingWhenNodesShareAnAddress(t *testing.T) {
	e := newEnvWith(t, envOptions{preferredAddressTypes: "Hostname,InternalIP"})
	edgeB := e.newEdgeHost(t, secondEdgeSubnet)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	egress := e.requesterTLS(t, "kube-apiserver-egress")

	t.Run("same InternalIP, reached by name", func(t *testing.T) {
		nodes := map[string]*netns.Host{"vn-site-a": e.edge, "vn-site-b": edgeB}
		for name, h := range nodes {
			e.startNodeOn(t, h, nodeIP, name, 10250, nil)
			e.startAgentOn(t, h, name, e.nodeCert(t, name))
		}
		waitFor(ctx, t, "both nodes' sessions on both replicas", func() bool {
			for name := range nodes {
				if !e.server.cur.HasSession(name) || !e.serverB.cur.HasSession(name) {
					return false
				}
			}
			return true
		})
		for name := range nodes {
			n, err := e.cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Status.Addresses[0]; got.Type != corev1.NodeInternalIP || got.Address != nodeIP {
				t.Fatalf("node %s's first address is %v, want InternalIP %s: the test proves nothing", name, got, nodeIP)
			}
			e.runPod(ctx, t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "on-" + name, Namespace: "sites"},
				Spec: corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "main", Image: "busybox",
					Command: []string{"/bin/sh", "-c", "echo i-am-on-" + name + "; sleep 3600"}}}}})
		}
		for name := range nodes {
			var out []byte
			waitFor(ctx, t, "kubectl logs of the pod on "+name, func() bool {
				var err error
				out, err = e.cp.Kubectl(ctx, "-n", "sites", "logs", "on-"+name).CombinedOutput()
				return err == nil && strings.Contains(string(out), "i-am-on-"+name)
			})
			// (Not the node proxy, /api/v1/nodes/<name>/proxy: kube-apiserver
			// resolves a Hostname address in its own DNS before that.)
			out, err := e.cp.Kubectl(ctx, "-n", "sites", "exec", "on-"+name, "--", "/bin/sh", "-c", "echo exec-on-$((6*7))").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "exec-on-42") {
				t.Fatalf("kubectl exec in the pod on %s: %v\n%s", name, err, out)
			}
		}

		m := e.server.cur.Metrics()
		before := testutil.ToFloat64(m.Refused.WithLabelValues("address_clash"))
		status, body, err := connectAnswer(ctx, e.server.proxyAddr, egress, net.JoinHostPort(nodeIP, "10250"))
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusConflict || !strings.Contains(body, "vn-site-a") || !strings.Contains(body, "vn-site-b") {
			t.Fatalf("CONNECT %s:10250, claimed by both nodes: status %d %q; want 409 naming both", nodeIP, status, body)
		}
		t.Logf("CONNECT by the shared address: %d %s", status, strings.TrimSpace(body))
		if got := testutil.ToFloat64(m.Refused.WithLabelValues("address_clash")); got != before+1 {
			t.Fatalf("address_clash refusals %v -> %v, want one more", before, got)
		}
	})

	t.Run("a vnode certificate cannot serve a real node", func(t *testing.T) {
		const real, port = "edge-real", 10350
		// The real node X's Node, as its kubelet would register it: no
		// type=virtual-kubelet label. Its kubelet stand-in on the first
		// edge host says "real"; an impostor on the second says "impostor".
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: real}}
		if _, err := e.cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		statusPatch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}],"daemonEndpoints":{"kubeletEndpoint":{"Port":%d}}}}`,
			nodeIP, real, port)
		if _, err := e.cp.Client.CoreV1().Nodes().Patch(ctx, real, types.MergePatchType, []byte(statusPatch), metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		sayOn(t, e.edge, port, "real")
		sayOn(t, edgeB, port, "impostor")
		target := net.JoinHostPort(real, fmt.Sprint(port))
		m := e.server.cur.Metrics()
		sessions := func(prefix string) float64 { return testutil.ToFloat64(m.Sessions.WithLabelValues(real, prefix)) }

		// The impostor: a virtual node's certificate for the real node's
		// name (vnode-approver signs one for a name with no virtual node).
		e.startAgentOn(t, edgeB, real, e.clientCert(t, identity.VNodeUser(real), identity.VNodesGroup))
		waitFor(ctx, t, "the impostor's session", func() bool { return e.server.cur.HasSession(real) })
		status, body, err := connectAnswer(ctx, e.server.proxyAddr, egress, target)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusServiceUnavailable || !strings.Contains(body, identity.VNodeUser(real)) {
			t.Fatalf("CONNECT %s with only a vnode identity's session: %d %q; want 503", target, status, body)
		}

		// The real node's kubelet identity carries it; a newer session of
		// the impostor's identity does not displace it.
		e.startAgentOn(t, e.edge, real, e.clientCert(t, identity.NodeUserPrefix+real, identity.NodesGroup))
		waitFor(ctx, t, "the kubelet identity's session", func() bool { return sessions(identity.NodeUserPrefix) == 1 })
		var got string
		waitFor(ctx, t, "the replica to see edge-real's kubelet port", func() bool {
			got = hear(ctx, t, e.server.proxyAddr, egress, target)
			return got != ""
		})
		if got != "real" {
			t.Fatalf("%s answered by %q", target, got)
		}
		replaced := testutil.ToFloat64(m.Replacements)
		e.startAgentOn(t, edgeB, real, e.clientCert(t, identity.VNodeUser(real), identity.VNodesGroup))
		waitFor(ctx, t, "the second impostor session", func() bool { return testutil.ToFloat64(m.Replacements) > replaced })
		for range 3 {
			if got := hear(ctx, t, e.server.proxyAddr, egress, target); got != "real" {
				t.Fatalf("after the impostor reconnected, %s answered by %q", target, got)
			}
		}

		// The label is judged when routing: once the Node says it is a
		// virtual node, only the vnode identity may carry it.
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, identity.NodeTypeLabel, identity.NodeTypeVirtual)
		if _, err := e.cp.Client.CoreV1().Nodes().Patch(ctx, real, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "the relabelled node carried by the vnode identity", func() bool {
			return hear(ctx, t, e.server.proxyAddr, egress, target) == "impostor"
		})
	})

	t.Run("network domains through their gateways", func(t *testing.T) {
		e.testNetworkDomains(ctx, t, edgeB, egress)
	})
}

// sayOn serves word to every connection on the node address of edge host h.
func sayOn(t *testing.T, h *netns.Host, port int, word string) {
	t.Helper()
	l, err := h.ListenOn(nodeIP, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, word+"\n")
			_ = c.Close()
		}
	}()
}

// hear CONNECTs to target and returns the line its server says, or "" if
// refused.
func hear(ctx context.Context, t *testing.T, proxy string, cfg *tls.Config, target string) string {
	t.Helper()
	c, status, err := connectVia(ctx, proxy, cfg, target)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading through the tunnel to %s: %v", target, err)
	}
	return strings.TrimSpace(line)
}

// connectAnswer CONNECTs to target and returns the status and, when
// refused, the body (the refusal's reason).
func connectAnswer(ctx context.Context, proxy string, cfg *tls.Config, target string) (int, string, error) {
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return 0, "", fmt.Errorf("dialing %s: %w", proxy, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return 0, "", fmt.Errorf("writing CONNECT %s: %w", target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, "", fmt.Errorf("reading the CONNECT answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), err
}
