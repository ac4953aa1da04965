package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requesterTLS is a CONNECT requester's TLS configuration towards the
// replicas: the tunnel CA, and a client certificate with CN name from it.
func (e *env) requesterTLS(t *testing.T, name string) *tls.Config {
	t.Helper()
	pair, err := e.tca.ClientCert("requester-"+name, name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(pair.CertPath, pair.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool(t, e.tca.CACertPath), ServerName: serverName,
		Certificates: []tls.Certificate{cert}}
}

func pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", file)
	}
	return p
}

// connectVia opens a tunnel to target through the replica (or load
// balancer) at proxy, as kube-apiserver or a metrics scraper does: TLS to
// the replica, CONNECT, then the target's bytes. It returns the CONNECT
// status, and the tunnel on 200.
func connectVia(ctx context.Context, proxy string, cfg *tls.Config, target string) (net.Conn, int, error) {
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, 0, fmt.Errorf("dialing %s: %w", proxy, err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		_ = c.Close()
		return nil, 0, fmt.Errorf("writing CONNECT %s: %w", target, err)
	}
	// Read the answer byte by byte: no tunneled byte may be left in a
	// buffer the caller cannot see.
	var hdr []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(hdr, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			_ = c.Close()
			return nil, 0, fmt.Errorf("reading the CONNECT answer: %w", err)
		}
		hdr = append(hdr, b[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(hdr)), nil)
	if err != nil {
		_ = c.Close()
		return nil, 0, fmt.Errorf("parsing the CONNECT answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, resp.StatusCode, nil
	}
	_ = c.SetDeadline(time.Time{})
	return c, resp.StatusCode, nil
}

// runPod creates pod on the node and waits until it runs.
func (e *env) runPod(ctx context.Context, t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, err := e.cp.Client.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{}); err != nil {
		if err := e.cp.CreateNamespace(ctx, pod.Namespace); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.cp.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "pod "+pod.Name+" running", func() bool {
		p, err := e.cp.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})
}
