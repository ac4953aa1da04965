package approver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/translate"
	"github.com/vnode-project/vnode/provider/vnode"
)

// servingSubnet is the test host of testServing (integration/netns).
const servingSubnet = 52

// testServing: a virtual node that bootstrapped runs with
// RotateServerCertificates (--rotate-server-certificates), its kubelet API
// on a host of its own (the API server does not proxy to loopback). Its
// kubelet-serving CSR, requested as system:vnode:<node>, is approved by
// vnode-approver and signed by the cluster CA; the API server's node proxy
// verifies the served certificate against that CA
// (--kubelet-certificate-authority); and the renewed certificate (the
// control plane signs 1-minute certificates) is served and verified too.
func testServing(ctx context.Context, t *testing.T, e *env) {
	const name, tokenID = "vn-serving", "srvnod"
	createToken(ctx, t, e.cp, tokenID, []string{bootstrapGroup}, nil)
	vn := startVirtualNode(ctx, t, e.cp, name, tokenID)

	host := netns.New(t, servingSubnet)
	l, err := host.Listen(10250)
	if err != nil {
		t.Fatal(err)
	}
	const ak, sk = "serving-id", "serving-secret"
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{ak: sk}, Runtime: "sim"})
	logf := filepath.Join(filepath.Dir(vn.cfg.KubeconfigPath), "vnode.log")
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	logger := logrus.New()
	logger.SetOutput(f)
	cloud, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: ak, AccessKeySecret: sk, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- vnode.Run(runCtx, vnode.Options{
			NodeName: name,
			Node: nodeobject.Config{Name: name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, InternalIP: host.IP.String(),
				KubeletPort: 10250, KubeletVersion: "v1.35.4-vnode",
				Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10"), corev1.ResourceMemory: resource.MustParse("10Gi"), corev1.ResourcePods: resource.MustParse("10")}},
			Pods:  translate.NodeSettings{ClusterName: "serving", NodeName: name, VSwitchIDs: []string{"vsw-1"}, SecurityGroupID: "sg-1"},
			Cloud: cloud, Checker: cloud, Kube: vn.client.RESTConfig(), Listener: l,
			ClientCAFile: e.cp.PKI.CACertPath, RotateServerCertificates: true, CertDir: vn.cfg.CertDir,
			Version: "serving", SyncInterval: time.Second, GCInterval: time.Minute,
			Log: logrus.NewEntry(logger), Ready: ready,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("virtual node %s stopped: %v (log %s)", name, err, logf)
	case <-ctx.Done():
		t.Fatalf("virtual node %s not ready", name)
	}

	addr := net.JoinHostPort(host.IP.String(), "10250")
	first := waitServed(ctx, t, addr, nil)
	checkIssuedBy(ctx, t, e.cp.Client, first, vnodeUser(name))
	proxyHealthz(ctx, t, e, name)
	checkNodeEvent(ctx, t, e, name, "ServingCertificateReady")

	// Renewed before it expires, and the renewal is what is served.
	renewed := waitServed(ctx, t, addr, first)
	checkIssuedBy(ctx, t, e.cp.Client, renewed, vnodeUser(name))
	proxyHealthz(ctx, t, e, name)
}

// checkNodeEvent waits for the node's own event reason about its Node.
func checkNodeEvent(ctx context.Context, t *testing.T, e *env, node, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := e.cp.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + reason})
		return err == nil && len(evs.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("no event %s about node %s: %v", reason, node, err)
	}
}

// waitServed waits until the kubelet API at addr serves a certificate
// other than old and returns it.
func waitServed(ctx context.Context, t *testing.T, addr string, old *x509.Certificate) *x509.Certificate {
	t.Helper()
	var cur *x509.Certificate
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // reads what is served; the API server verifies
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			lastErr = err
			return false, nil
		}
		defer conn.Close()
		cur = conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		return old == nil || !cur.Equal(old), nil
	})
	if err != nil {
		t.Fatalf("the kubelet API at %s served no new certificate: %v (last handshake error: %v)", addr, err, lastErr)
	}
	t.Logf("served certificate: CN=%s DNS=%q IP=%v notAfter %s", cur.Subject.CommonName, cur.DNSNames, cur.IPAddresses, cur.NotAfter)
	return cur
}

// proxyHealthz reaches the node's kubelet API through the API server,
// which verifies the node's serving certificate against the cluster CA.
func proxyHealthz(ctx context.Context, t *testing.T, e *env, node string) {
	t.Helper()
	out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/healthz").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("the API server's proxy to node %s: %v: %s", node, err, out)
	}
}
