package tunnel

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	tun "github.com/vnode-project/vnode/tunnel"
)

// TestKubectlThroughTunnel: logs, exec and the node proxy reach a node the
// cluster cannot dial, through the egress selector, the tunnel server and
// the agent; a port off the allow-list is refused; a server restart heals.
func TestKubectlThroughTunnel(t *testing.T) {
	const name = "vn-edge"
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// newEnv took the kubelet port off the default localhost list.
	cm, err := e.cp.Client.CoreV1().ConfigMaps(tun.ConfigMapNamespace).Get(ctx, tun.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	e.startNode(t, name)
	// First, the premise: nothing here can dial the node's kubelet, by its
	// address or by the edge host's link address.
	for _, addr := range []string{net.JoinHostPort(nodeIP, "10250"), net.JoinHostPort(e.edge.IP.String(), "10250")} {
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			_ = c.Close()
			t.Fatalf("dialed the edge node at %s from the cluster side: the test proves nothing", addr)
		} else {
			t.Logf("dial %s from the cluster side: %v (as intended)", addr, err)
		}
	}
	// Nor can the API server, before the agent is there.
	if out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+name+"/proxy/healthz").CombinedOutput(); err == nil {
		t.Fatalf("node proxy worked without a tunnel session: %s", out)
	}

	e.startAgent(t, name)
	waitFor(ctx, t, "the agent's sessions to both replicas", func() bool {
		return e.server.cur.HasSession(name) && e.serverB.cur.HasSession(name)
	})

	if err := e.cp.CreateNamespace(ctx, "edge"); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "edge"},
		Spec: corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "main", Image: "busybox",
			Command: []string{"/bin/sh", "-c", "echo hello-through-the-tunnel; sleep 3600"}}}}}
	if _, err := e.cp.Client.CoreV1().Pods("edge").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the pod running", func() bool {
		p, err := e.cp.Client.CoreV1().Pods("edge").Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})

	checkLogs := func() {
		t.Helper()
		var out []byte
		waitFor(ctx, t, "kubectl logs through the tunnel", func() bool {
			var err error
			out, err = e.cp.Kubectl(ctx, "-n", "edge", "logs", "hello").CombinedOutput()
			return err == nil && strings.Contains(string(out), "hello-through-the-tunnel")
		})
	}
	checkLogs()

	out, err := e.cp.Kubectl(ctx, "-n", "edge", "exec", "hello", "--", "/bin/sh", "-c", "echo exec-$((6*7))").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "exec-42") {
		t.Fatalf("kubectl exec through the tunnel: %v\n%s", err, out)
	}

	out, err = e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+name+"/proxy/stats/summary").Output()
	if err != nil {
		t.Fatalf("stats/summary through the tunnel: %v", err)
	}
	var sum statsv1alpha1.Summary
	if err := json.Unmarshal(out, &sum); err != nil || sum.Node.NodeName != name {
		t.Fatalf("summary: %v\n%s", err, out)
	}

	// A port off the allow-list is refused by the server, before any dial.
	m := e.server.cur.Metrics()
	before := testutil.ToFloat64(m.Refused.WithLabelValues("port"))
	if out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+name+":2379/proxy/").CombinedOutput(); err == nil {
		t.Fatalf("port 2379 through the tunnel: %s", out)
	}
	if got := testutil.ToFloat64(m.Refused.WithLabelValues("port")); got != before+1 {
		t.Fatalf("port refusals %v -> %v, want one more", before, got)
	}

	// A bad ConfigMap value is rejected with an Event; the last good ports
	// stay in force.
	cm.Data[tun.KeyHTTPProxyPorts] = "9100,not-a-port"
	if _, err := e.cp.Client.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "an InvalidPortConfig Event", func() bool {
		evs, err := e.cp.Client.CoreV1().Events(cm.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, ev := range evs.Items {
			if ev.Reason == "InvalidPortConfig" && ev.InvolvedObject.Name == tun.ConfigMapName {
				return true
			}
		}
		return false
	})
	if out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+name+"/proxy/healthz").CombinedOutput(); err != nil {
		t.Fatalf("after a bad ConfigMap the last good ports are gone: %v\n%s", err, out)
	}

	// A replica that starts while the ConfigMap is bad has no last good
	// configuration but the defaults: mend it before the restart.
	if cm, err = e.cp.Client.CoreV1().ConfigMaps(cm.Namespace).Get(ctx, cm.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	delete(cm.Data, tun.KeyHTTPProxyPorts)
	if _, err := e.cp.Client.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A server restart: the agent reconnects and traffic flows again.
	e.server.restart()
	waitFor(ctx, t, "the agent's session after the restart", func() bool { return e.server.cur.HasSession(name) })
	checkLogs()
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}
