package tunnel

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/identity"
	tun "github.com/vnode-project/vnode/tunnel"
)

const (
	// The edge host of this test: its link is 10.231.70.0/30, and the
	// load balancer's first address is this side's end of it.
	lbEdgeSubnet = 70
	// The load balancer's second address, after the Service's changes: on
	// this side's loopback, routed from the edge host through its link.
	lbSecondIP = "10.231.71.1"
	lbService  = "x-tunnel-server-svc"
	lbNode     = "vn-behind-lb"
)

// TestAgentsReachEveryReplicaThroughALoadBalancer (seeds 001 and 002): three
// server replicas behind one address, an L4 load balancer the test runs
// that sends each connection to a random replica, as a cloud load
// balancer in front of x-tunnel-server-svc does.
//
//   - The replicas count themselves from the Service's EndpointSlice, and
//     the agent, dialing that one address, ends up with a session to every
//     replica: a CONNECT through each replica reaches the node. Before, it
//     held one session, to whichever replica it landed on, and CONNECTs
//     through the two others got 503.
//   - The replicas issue their own serving certificate for the Service's
//     names and addresses, from the tunnel CA they keep in a Secret and
//     publish in a ConfigMap (what the agents trust, with no manual step).
//     When the load balancer's address changes, a TLS handshake to the
//     new address fails until the replicas re-issue; then an agent
//     pointed at the new address verifies them and holds every replica
//     again. Seed 002's manual step (delete the pki directory, restart the
//     pods) is gone.
func TestAgentsReachEveryReplicaThroughALoadBalancer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	for _, f := range []string{"rbac.yaml", "ca.yaml"} {
		if out, err := cp.Kubectl(ctx, "apply", "-f", repoPath("manifests", "tunnel", f)).CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
		}
	}
	// The kubelet stand-in listens on the node's address, not loopback.
	if _, err := cp.Client.CoreV1().ConfigMaps(tun.ConfigMapNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: tun.ConfigMapNamespace, Name: tun.ConfigMapName},
		Data:       map[string]string{tun.KeyLocalhostPorts: "10266, 10267"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The edge host, and the node it runs: its Node, its kubelet stand-in.
	edge := netns.New(t, lbEdgeSubnet)
	if err := edge.AddAddress(nodeIP + "/32"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"addr", "replace", lbSecondIP + "/32", "dev", "lo"},
		{"-n", edge.Name, "route", "replace", lbSecondIP + "/32", "via", edge.HostIP.String()},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", lbSecondIP+"/32", "dev", "lo").Run() })
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: lbNode, Labels: map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual}}}
	if node, err := cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	} else {
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}
		node.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
		if _, err := cp.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sayOn(t, edge, 10250, "kubelet-of-"+lbNode)

	// x-tunnel-server-svc as the cloud made it: a LoadBalancer with an
	// ingress address, and three ready replicas in its EndpointSlice.
	lbIP := edge.HostIP.String()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: lbService, Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{
			{Name: "tcp", Port: 10262}, {Name: "https", Port: 10263}}}}
	svc, err := cp.Client.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setIngress := func(ip string) {
		t.Helper()
		s, err := cp.Client.CoreV1().Services("kube-system").Get(ctx, lbService, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
		if _, err := cp.Client.CoreV1().Services("kube-system").UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setIngress(lbIP)
	var eps []discoveryv1.Endpoint
	for i := range 3 {
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.0.%d", 10+i)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	if _, err := cp.Client.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: lbService + "-replicas", Namespace: "kube-system", Labels: map[string]string{
			discoveryv1.LabelServiceName: lbService, discoveryv1.LabelManagedBy: "vnode-test"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To[int32](10262)}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Three replicas, as their ServiceAccount (the RBAC manifest is what
	// they may do), each provisioning its own certificate.
	dir := t.TempDir()
	reqCA, err := controlplane.NewCA(dir, "requesters")
	if err != nil {
		t.Fatal(err)
	}
	egress, err := reqCA.ClientCert("egress", "kube-apiserver-egress")
	if err != nil {
		t.Fatal(err)
	}
	kube, err := cp.UserConfig("system:serviceaccount:kube-system:edge-tunnel-server", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	log := logrus.NewEntry(logger)
	var replicas []*tunnelServer
	var backends []string
	for i := range 3 {
		al, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("edge-tunnel-server-%d", i)
		s := &tunnelServer{t: t, agentAddr: al.Addr().String(), proxyAddr: pl.Addr().String(), opts: tun.ServerRunOptions{
			Kube: kube, AgentCAFile: cp.PKI.CACertPath, ProxyCAFile: reqCA.CACertPath, ProxyClientNames: []string{"kube-apiserver-egress"},
			DialTimeout: 5 * time.Second, Log: log.WithField("side", name),
			Replicas: tun.ReplicaOptions{Name: name, Namespace: "kube-system", CountService: lbService,
				ServingCert: tun.ServingCertConfig{Services: []string{lbService}, Dir: filepath.Join(dir, name, "pki"),
					CASecret: "edge-tunnel-ca", CAConfigMap: "edge-tunnel-ca"}}}}
		s.start(al, pl)
		t.Cleanup(s.stop)
		replicas = append(replicas, s)
		backends = append(backends, s.agentAddr)
		if fi, err := os.Stat(filepath.Join(dir, name, "pki", "tls.pem")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s's serving key file: %v %v, want mode 0600", name, fi, err)
		}
	}
	lb := newRandomLB(backends)
	port := lb.listen(t, lbIP)

	// What the agents' DaemonSet mounts: the CA the replicas published.
	cm, err := cp.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "edge-tunnel-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "tunnel-ca.crt")
	if err := os.WriteFile(caFile, []byte(cm.Data[tun.CACertKey]), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewCABundle(caFile)
	if err != nil {
		t.Fatalf("the replicas published no CA for agents: %v", err)
	}
	clientCert, err := cp.PKI.ClientCert("agent-lb", identity.VNodeUser(lbNode), identity.VNodesGroup)
	if err != nil {
		t.Fatal(err)
	}
	agentCert, err := certs.NewKeyPair(clientCert.CertPath, clientCert.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	startAgent := func(server string) (*tun.Agent, func()) {
		t.Helper()
		a, err := tun.NewAgent(tun.AgentConfig{Server: server, Cert: agentCert, CA: ca,
			Addresses: []string{nodeIP}, Dial: edge.Dial, DialTarget: edge.Dial,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, DrainTimeout: time.Second,
			Log: log.WithField("side", "agent"), Metrics: tun.NewMetrics(prometheus.NewRegistry())})
		if err != nil {
			t.Fatal(err)
		}
		actx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(actx) }()
		stopped := sync.OnceFunc(func() { stop(); <-done })
		t.Cleanup(stopped)
		return a, stopped
	}

	// Each replica carries a CONNECT to the node: the agent holds a
	// session on each.
	requester := func() *tls.Config {
		pair, err := tls.LoadX509KeyPair(egress.CertPath, egress.KeyPath)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool(t, caFile),
			ServerName: lbService + ".kube-system.svc", Certificates: []tls.Certificate{pair}}
	}()
	everyReplica := func(a *tun.Agent) {
		t.Helper()
		waitFor(ctx, t, "the agent's session on every replica", func() bool {
			for _, r := range replicas {
				if !r.cur.HasSession(lbNode) {
					return false
				}
			}
			return len(a.Replicas()) == len(replicas)
		})
		for i, r := range replicas {
			if got := hear(ctx, t, r.proxyAddr, requester, net.JoinHostPort(lbNode, "10250")); got != "kubelet-of-"+lbNode {
				t.Fatalf("CONNECT through replica %d heard %q", i, got)
			}
		}
	}
	a, stopA := startAgent(net.JoinHostPort(lbIP, port))
	everyReplica(a)
	t.Logf("agent holds %v through %s", a.Replicas(), net.JoinHostPort(lbIP, port))

	// The load balancer's address changes. Its new address is not in the
	// certificate yet: a handshake to it fails verification.
	second := lb.listen(t, lbSecondIP)
	if second != port {
		t.Fatalf("the load balancer's second address got port %s, want %s", second, port)
	}
	handshake := func(addr string) error {
		raw, err := edge.Dial(ctx, "tcp", net.JoinHostPort(addr, port))
		if err != nil {
			return err
		}
		defer raw.Close()
		cert, err := agentCert.Get()
		if err != nil {
			return err
		}
		pool, err := ca.Pool()
		if err != nil {
			return err
		}
		c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: addr,
			Certificates: []tls.Certificate{*cert}, NextProtos: []string{"vnode-tunnel/2"}})
		return c.HandshakeContext(ctx)
	}
	var hostErr x509.HostnameError
	if err := handshake(lbSecondIP); !errors.As(err, &hostErr) {
		t.Fatalf("handshake to the new address before the Service names it: %v, want a certificate name mismatch", err)
	}
	setIngress(lbSecondIP)
	waitFor(ctx, t, "certificates naming the new address on every replica", func() bool {
		for range 2 * len(replicas) { // random backends: try each a few times
			if handshake(lbSecondIP) != nil {
				return false
			}
		}
		return true
	})
	stopA()
	b, _ := startAgent(net.JoinHostPort(lbSecondIP, port))
	everyReplica(b)
	t.Logf("agent holds %v through %s after the address change", b.Replicas(), net.JoinHostPort(lbSecondIP, port))
}

// randomLB is an L4 load balancer: each connection to any of its
// addresses goes to a random backend.
type randomLB struct {
	backends []string
	port     string
}

func newRandomLB(backends []string) *randomLB { return &randomLB{backends: backends} }

// listen adds an address (the same port on every address) and returns
// the port.
func (lb *randomLB) listen(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, cmp.Or(lb.port, "0")))
	if err != nil {
		t.Fatal(err)
	}
	_, lb.port, _ = net.SplitHostPort(l.Addr().String())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", lb.backends[rand.IntN(len(lb.backends))], 2*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns[c], conns[up] = struct{}{}, struct{}{}
			mu.Unlock()
			for _, p := range [][2]net.Conn{{up, c}, {c, up}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = io.Copy(p[0], p[1])
					_ = p[0].(*net.TCPConn).CloseWrite()
				}()
			}
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lb.port
}
