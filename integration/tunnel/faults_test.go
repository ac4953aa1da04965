package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/integration/testio"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/vnode"
)

// TestReplicaFailoverAndAgentRestart: the agent holds a session to each of
// two replicas; killing the one the API server uses moves traffic to the
// other (a stream already on the survivor keeps flowing), and an agent
// restart in the middle of kubectl logs -f heals by itself.
func TestReplicaFailoverAndAgentRestart(t *testing.T) {
	const name = "vn-faults"
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.startNode(t, name)
	agent := e.startAgent(t, name)
	bothSessions := func() bool { return e.server.cur.HasSession(name) && e.serverB.cur.HasSession(name) }
	waitFor(ctx, t, "the agent's sessions to both replicas", bothSessions)

	e.runPod(ctx, t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ticker", Namespace: "faults"},
		Spec: corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "main", Image: "busybox",
			Command: []string{"/bin/sh", "-c", `i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.2; done`}}}}})
	logs := func() error {
		out, err := e.cp.Kubectl(ctx, "-n", "faults", "logs", "ticker", "--tail=1").CombinedOutput()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(out), "line ") {
			return &unexpected{string(out)}
		}
		return nil
	}
	waitFor(ctx, t, "kubectl logs through the tunnel", func() bool { return logs() == nil })

	// Replica B serves the node on its own, independently of the API
	// server (which only ever reaches A while A lives): follow the logs
	// through B directly, as a second requester would.
	follow := e.followViaReplica(ctx, t, e.serverB.proxyAddr, name)
	follow.waitLines(t, 2)

	// Kill replica A. The API server's next connections land on B.
	bBefore := testutil.ToFloat64(e.serverB.cur.Metrics().Bytes.WithLabelValues("to_node"))
	e.server.stop()
	start := time.Now()
	waitFor(ctx, t, "kubectl logs with replica A dead", func() bool { return logs() == nil })
	t.Logf("first kubectl logs through replica B %s after A died", time.Since(start).Round(time.Millisecond))
	if after := testutil.ToFloat64(e.serverB.cur.Metrics().Bytes.WithLabelValues("to_node")); after <= bBefore {
		t.Fatalf("replica B carried no bytes to the node (%v -> %v): the traffic did not go through it", bBefore, after)
	}
	out, err := e.cp.Kubectl(ctx, "-n", "faults", "exec", "ticker", "--", "/bin/sh", "-c", "echo via-b-$((6*7))").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via-b-42") {
		t.Fatalf("kubectl exec with replica A dead: %v\n%s", err, out)
	}
	// The stream on B never noticed.
	follow.waitLines(t, follow.count()+3)
	follow.close()

	// A comes back on its addresses; the agent finds it again by itself.
	e.server.restart()
	waitFor(ctx, t, "the agent's session to the restarted replica A", bothSessions)

	// An agent restart in the middle of kubectl logs -f: the stream in
	// flight may end, the next request works without anyone stepping in.
	fctx, fcancel := context.WithTimeout(ctx, time.Minute)
	defer fcancel()
	cmd := e.cp.Kubectl(fctx, "-n", "faults", "logs", "-f", "ticker")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for i := 0; i < 3; i++ {
		select {
		case <-lines:
		case <-time.After(20 * time.Second):
			t.Fatal("kubectl logs -f printed nothing")
		}
	}
	agent.restart()
	start = time.Now()
	waitFor(ctx, t, "kubectl logs after the agent restart", func() bool { return logs() == nil })
	t.Logf("first kubectl logs %s after the agent restart", time.Since(start).Round(time.Millisecond))
	waitFor(ctx, t, "the new agent's sessions to both replicas", bothSessions)
	// The follow in flight: it ended (the old session drained) or still
	// runs; either is allowed, hanging silently forever is not checked
	// here, the request after it is what must work.
	fcancel()
	for range lines {
	}
	err = cmd.Wait()
	t.Logf("kubectl logs -f across the agent restart ended with %v", err)

	// A node with the agent in its own process is Ready only while the
	// agent holds a session: with both replicas gone it turns False with
	// the reason, and True again once a replica is back.
	// It has an address of its own on the edge host: two nodes listing the
	// same address are reached only by name, and the node proxy here goes
	// by InternalIP.
	const embedded, embeddedIP = "vn-embedded", "10.231.61.3"
	if err := e.edge.AddAddress(embeddedIP + "/32"); err != nil {
		t.Fatal(err)
	}
	cert, err := e.cp.PKI.ClientCert("embedded-"+embedded, "system:vnode:"+embedded, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	e.startNodeOn(t, e.edge, embeddedIP, embedded, 10251, &vnode.TunnelOptions{
		Server: net.JoinHostPort(serverName, e.agentPort()), CAFile: e.tca.CACertPath, CertFile: cert.CertPath, KeyFile: cert.KeyPath,
		Addresses: []string{embeddedIP}, Dial: e.edge.Dial, DialTarget: e.edge.Dial, Resolve: e.resolveReplicas,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, CheckInterval: 100 * time.Millisecond})
	ready := func(status corev1.ConditionStatus, reason string) func() bool {
		return func() bool {
			n, err := e.cp.Client.CoreV1().Nodes().Get(ctx, embedded, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == status && c.Reason == reason
				}
			}
			return false
		}
	}
	waitFor(ctx, t, "the embedded-agent node Ready", ready(corev1.ConditionTrue, nodeobject.ReasonReady))
	if out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+embedded+"/proxy/healthz").CombinedOutput(); err != nil {
		t.Fatalf("the embedded-agent node's kubelet API through the tunnel: %v\n%s", err, out)
	}
	e.server.stop()
	e.serverB.stop()
	waitFor(ctx, t, "the embedded-agent node NotReady ("+nodeobject.ReasonTunnelDown+")", ready(corev1.ConditionFalse, nodeobject.ReasonTunnelDown))
	e.serverB.restart()
	waitFor(ctx, t, "the embedded-agent node Ready again", ready(corev1.ConditionTrue, nodeobject.ReasonReady))
}

type unexpected struct{ out string }

func (u *unexpected) Error() string { return "unexpected output: " + u.out }

// follower reads a pod's logs with follow=true straight from the node's
// kubelet API through one replica.
type follower struct {
	body io.Closer
	seen *testio.LockedBuffer
}

// followViaReplica opens GET /containerLogs/faults/ticker/main?follow=true
// on the node's kubelet API through the replica at proxy, as a cluster
// admin (the kubelet authorizes the caller; the tunnel only carries it).
func (e *env) followViaReplica(ctx context.Context, t *testing.T, proxy, node string) *follower {
	t.Helper()
	admin, err := e.cp.PKI.ClientCert("tunnel-admin", "tunnel-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(admin.CertPath, admin.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	reqCfg := e.requesterTLS(t, "kube-apiserver-egress")
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, status, err := connectVia(ctx, proxy, reqCfg, addr)
			if err != nil {
				return nil, err
			}
			if c == nil {
				return nil, &unexpected{http.StatusText(status)}
			}
			return c, nil
		},
		// The node's serving certificate is verified against the cluster
		// CA: the tunnel does not weaken kubelet TLS.
		TLSClientConfig: &tls.Config{RootCAs: pool(t, e.cp.PKI.CACertPath), Certificates: []tls.Certificate{cert}, ServerName: node},
	}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(nodeIP, "10250")+"/containerLogs/faults/ticker/main?follow=true", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("following the logs through replica %s: %v", proxy, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("following the logs through replica %s: %s %s", proxy, resp.Status, b)
	}
	f := &follower{body: resp.Body, seen: &testio.LockedBuffer{}}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			_, _ = f.seen.Write([]byte(sc.Text() + "\n"))
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *follower) count() int { return strings.Count(f.seen.String(), "\n") }

func (f *follower) waitLines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for f.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the followed stream has %d lines after 20s, want %d", f.count(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *follower) close() { _ = f.body.Close() }
