package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tun "github.com/vnode-project/vnode/tunnel"
)

// TestPortsFollowConfigMap: an HTTP port on the node's address and a port
// that listens only on the node's loopback become reachable through every
// replica's CONNECT (as a metrics scraper with a client certificate would
// use it) when the ConfigMap lists them, and unreachable again when it
// stops listing them, with no restart.
func TestPortsFollowConfigMap(t *testing.T) {
	const name = "vn-ports"
	const httpPort, localPort = 9100, 19101
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.startNode(t, name)
	e.startAgent(t, name)
	waitFor(ctx, t, "the agent's sessions to both replicas", func() bool {
		return e.server.cur.HasSession(name) && e.serverB.cur.HasSession(name)
	})

	// On the edge host: a node-exporter-like HTTP server on the node's
	// address, and an agent-like one on its loopback only.
	serve := func(ip string, port int, body string) {
		l, err := e.edge.ListenOn(ip, port)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, body)
		})}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	serve(nodeIP, httpPort, "node_exporter_up 1\n")
	serve("127.0.0.1", localPort, "edge_localhost_up 1\n")

	scraper := e.requesterTLS(t, "metrics-scraper")
	// scrape CONNECTs to target through proxy and GETs /metrics; it returns
	// the CONNECT status and, on 200, the body.
	scrape := func(proxy, target string) (int, string, error) {
		c, status, err := connectVia(ctx, proxy, scraper, target)
		if err != nil || c == nil {
			return status, "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target); err != nil {
			return status, "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return status, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return status, string(b), err
	}
	targets := map[string]string{
		net.JoinHostPort(name, fmt.Sprint(httpPort)):    "node_exporter_up 1\n",
		net.JoinHostPort(nodeIP, fmt.Sprint(localPort)): "edge_localhost_up 1\n",
	}
	replicas := map[string]string{"A": e.server.proxyAddr, "B": e.serverB.proxyAddr}
	expect := func(open bool) {
		t.Helper()
		for rname, proxy := range replicas {
			for target, body := range targets {
				what := fmt.Sprintf("%s through replica %s to be refused", target, rname)
				if open {
					what = fmt.Sprintf("%s through replica %s to serve its metrics", target, rname)
				}
				var last string
				waitFor(ctx, t, what, func() bool {
					status, got, err := scrape(proxy, target)
					last = fmt.Sprintf("status %d body %q err %v", status, got, err)
					if open {
						return status == http.StatusOK && got == body
					}
					return status == http.StatusForbidden
				})
				t.Logf("%s: %s", what, last)
			}
		}
	}
	// Not listed: refused before any dial.
	expect(false)

	cms := e.cp.Client.CoreV1().ConfigMaps(tun.ConfigMapNamespace)
	update := func(f func(data map[string]string)) {
		t.Helper()
		cm, err := cms.Get(ctx, tun.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f(cm.Data)
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(func(d map[string]string) {
		d[tun.KeyHTTPProxyPorts] = fmt.Sprint(httpPort)
		d[tun.KeyLocalhostPorts] = fmt.Sprintf("10266, 10267, %d", localPort)
	})
	expect(true)

	update(func(d map[string]string) {
		delete(d, tun.KeyHTTPProxyPorts)
		d[tun.KeyLocalhostPorts] = "10266, 10267"
	})
	expect(false)
}
