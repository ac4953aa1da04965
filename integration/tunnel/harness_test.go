package tunnel

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/eciemulator"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/provider/eci"
	vnnode "github.com/vnode-project/vnode/provider/node"
	"github.com/vnode-project/vnode/provider/translate"
	tun "github.com/vnode-project/vnode/provider/tunnel"
	"github.com/vnode-project/vnode/provider/vnode"
)

const (
	akID     = "tunnel-id"
	akSecret = "tunnel-secret"
	// The edge host: the namespace's veth is 10.231.60.2 (it reaches this
	// side's 10.231.60.1, where the tunnel server listens); the node's own
	// address is 10.231.61.2 on its loopback, with no route to it from here.
	edgeSubnet = 60
	nodeIP     = "10.231.61.2"
	nodeNet    = "10.231.61.0/24"
)

func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, parts...)...)
}

// tunnelServer is an in-process server replica that can be restarted on
// the same addresses.
type tunnelServer struct {
	t         *testing.T
	opts      tun.ServerRunOptions
	agentAddr string
	proxyAddr string
	cancel    context.CancelFunc
	done      chan error
	srv       chan *tun.Server
	cur       *tun.Server
}

func (s *tunnelServer) start(agentL, proxyL net.Listener) {
	s.t.Helper()
	o := s.opts
	o.AgentListener, o.ProxyListener = agentL, proxyL
	s.srv = make(chan *tun.Server, 1)
	o.Started = func(srv *tun.Server) { s.srv <- srv }
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- tun.RunServer(ctx, o) }()
	select {
	case s.cur = <-s.srv:
	case err := <-s.done:
		s.t.Fatalf("tunnel server stopped: %v", err)
	case <-time.After(time.Minute):
		s.t.Fatal("tunnel server not ready in a minute")
	}
}

func (s *tunnelServer) stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Error("tunnel server did not stop in 30s")
	}
}

// restart stops the replica and starts a new one on the same addresses.
func (s *tunnelServer) restart() {
	s.t.Helper()
	s.stop()
	al, err := net.Listen("tcp", s.agentAddr)
	if err != nil {
		s.t.Fatal(err)
	}
	pl, err := net.Listen("tcp", s.proxyAddr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.start(al, pl)
}

// env is the control plane wired to a tunnel server, the emulator, and one
// edge host.
type env struct {
	cp     *controlplane.ControlPlane
	emu    string
	edge   *netns.Host
	server *tunnelServer
	log    *logrus.Entry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	e := &env{log: logrus.NewEntry(log)}

	// The edge host, and no route from here to the node's address: the
	// cluster cannot dial the node, the node can dial out.
	e.edge = netns.New(t, edgeSubnet)
	if err := e.edge.AddAddress(nodeIP + "/32"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "route", "replace", "unreachable", nodeNet).CombinedOutput(); err != nil {
		t.Fatalf("making %s unreachable: %v: %s", nodeNet, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", "unreachable", nodeNet).Run() })

	// The tunnel's own CA: the server's certificates and kube-apiserver's
	// egress client certificate. Agents use cluster certificates.
	dir := t.TempDir()
	tca, err := controlplane.NewCA(dir, "tunnel-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := tca.ServingCert("edge-tunnel-server", []string{"edge-tunnel-server"},
		[]net.IP{net.ParseIP("127.0.0.1"), e.edge.HostIP})
	if err != nil {
		t.Fatal(err)
	}
	egress, err := tca.ClientCert("apiserver-egress", "kube-apiserver-egress")
	if err != nil {
		t.Fatal(err)
	}
	proxyL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agentL, err := net.Listen("tcp", net.JoinHostPort(e.edge.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	egressCfg := filepath.Join(dir, "egress.yaml")
	if err := os.WriteFile(egressCfg, []byte(fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      tcp:
        url: https://%s
        tlsConfig:
          caBundle: %s
          clientCert: %s
          clientKey: %s
`, proxyL.Addr(), tca.CACertPath, egress.CertPath, egress.KeyPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cp = controlplane.StartForTest(t, controlplane.Options{EgressSelectorConfigFile: egressCfg})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{{"apply", "-k", repoPath("manifests", "vnode")}, {"apply", "-f", repoPath("manifests", "tunnel", "rbac.yaml")}} {
		if out, err := e.cp.Kubectl(ctx, args...).CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	// The server runs as its ServiceAccount would, so the RBAC manifest is
	// what it is allowed.
	kube, err := e.cp.UserConfig("system:serviceaccount:kube-system:edge-tunnel-server", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		t.Fatal(err)
	}
	_, ep := eciemulator.StartForTest(t, eciemulator.Config{Credentials: map[string]string{akID: akSecret}, Runtime: "process",
		Delays: eciemulator.Delays{Scheduling: 50 * time.Millisecond, Pending: 50 * time.Millisecond}})
	e.emu = ep

	e.server = &tunnelServer{t: t, agentAddr: agentL.Addr().String(), proxyAddr: proxyL.Addr().String(), opts: tun.ServerRunOptions{
		Kube: kube, AgentCertFile: serving.CertPath, AgentKeyFile: serving.KeyPath, AgentCAFile: e.cp.PKI.CACertPath,
		ProxyCertFile: serving.CertPath, ProxyKeyFile: serving.KeyPath, ProxyCAFile: tca.CACertPath,
		ProxyClientNames: []string{"kube-apiserver-egress"}, DialTimeout: 5 * time.Second, Log: e.log.WithField("side", "server")}}
	e.server.start(agentL, proxyL)
	t.Cleanup(e.server.stop)
	return e
}

// startAgent runs the agent as the edge node's: dialing out from its
// namespace, with the node's client certificate.
func (e *env) startAgent(t *testing.T, node string) *tun.Agent {
	t.Helper()
	cert, err := e.cp.PKI.ClientCert("agent-"+node, "system:vnode:"+node, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tun.NewKeyPair(cert.CertPath, cert.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	// The server's certificate is from the tunnel CA.
	ca, err := tun.NewCABundle(e.server.opts.ProxyCAFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tun.NewAgent(tun.AgentConfig{Server: e.server.agentAddr, ServerName: "edge-tunnel-server", Cert: pair, CA: ca,
		Addresses: []string{nodeIP}, Dial: e.edge.Dial, DialTarget: e.edge.Dial,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, DrainTimeout: 2 * time.Second,
		Log: e.log.WithField("side", "agent"), Metrics: tun.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// startNode runs a virtual node whose kubelet API listens only on the edge
// host's own address.
func (e *env) startNode(t *testing.T, name string) {
	t.Helper()
	cfg, err := e.cp.UserConfig("system:vnode:"+name, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.edge.ListenOn(nodeIP, 10250)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := e.cp.PKI.ServingCert("kubelet-"+name, []string{name}, []net.IP{net.ParseIP(nodeIP)})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	client, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + e.emu, AccessKeyID: akID, AccessKeySecret: akSecret, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- vnode.Run(ctx, vnode.Options{
			NodeName: name,
			Node: vnnode.Config{Name: name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, InternalIP: nodeIP,
				KubeletPort: 10250, KubeletVersion: "v1.35.4-vnode",
				Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("100")}},
			Pods: translate.NodeSettings{ClusterName: "tunnel", NodeName: name, VSwitchIDs: []string{"vsw-t"}, SecurityGroupID: "sg-t",
				ClusterDNS: []string{"10.0.0.10"}, ClusterDomain: "cluster.local"},
			Cloud: client, Checker: client, Kube: cfg, Listener: l,
			ClientCAFile: e.cp.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath,
			Version: "tunnel-e2e", SyncInterval: 500 * time.Millisecond, GCInterval: 2 * time.Second, LogPollInterval: 200 * time.Millisecond,
			Log: logrus.NewEntry(logger), Ready: ready,
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("virtual node %s stopped: %v", name, err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("virtual node %s not ready in 2 minutes", name)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
}
