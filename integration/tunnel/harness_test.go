package tunnel

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/translate"
	"github.com/vnode-project/vnode/provider/vnode"
	tun "github.com/vnode-project/vnode/tunnel"
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
	if s.cancel == nil { // already stopped
		return
	}
	s.cancel()
	s.cancel = nil
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

// env is the control plane wired to two tunnel server replicas behind a
// failover load balancer, the emulator, and one edge host.
type env struct {
	cp      *controlplane.ControlPlane
	emu     string
	edge    *netns.Host
	server  *tunnelServer // replica A: the load balancer's first choice
	serverB *tunnelServer // replica B
	lb      *failoverLB   // what the egress selector names
	tca     *controlplane.PKI
	log     *logrus.Entry
}

// replicaBIP is replica B's agent address: the replicas are two "pods"
// behind one headless name, each with its own IP and the same port. It is
// an address of this side, routed from the edge host through its veth.
const replicaBIP = "10.231.62.1"

// serverName is the replicas' name in their certificate, and the headless
// name the agent resolves to every replica.
const serverName = "edge-tunnel-server"

// envOptions vary the environment.
type envOptions struct {
	// preferredAddressTypes is kube-apiserver's
	// --kubelet-preferred-address-types (default InternalIP,Hostname).
	preferredAddressTypes string
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{}) }

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	e := &env{log: logrus.NewEntry(log)}

	// No route from here to the node's address: the cluster cannot dial
	// the node, the node can dial out.
	for _, args := range [][]string{
		{"route", "replace", "unreachable", nodeNet},
		{"addr", "replace", replicaBIP + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "route", "del", "unreachable", nodeNet).Run()
		_ = exec.Command("ip", "addr", "del", replicaBIP+"/32", "dev", "lo").Run()
	})
	e.edge = e.newEdgeHost(t, edgeSubnet)

	// The tunnel's own CA: the server's certificates and kube-apiserver's
	// egress client certificate. Agents use cluster certificates.
	dir := t.TempDir()
	tca, err := controlplane.NewCA(dir, "tunnel-ca")
	if err != nil {
		t.Fatal(err)
	}
	e.tca = tca
	serving, err := tca.ServingCert(serverName, []string{serverName},
		[]net.IP{net.ParseIP("127.0.0.1"), e.edge.HostIP, net.ParseIP(replicaBIP)})
	if err != nil {
		t.Fatal(err)
	}
	egress, err := tca.ClientCert("apiserver-egress", "kube-apiserver-egress")
	if err != nil {
		t.Fatal(err)
	}
	listen := func(addr string) net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	proxyA, proxyB := listen("127.0.0.1:0"), listen("127.0.0.1:0")
	agentA := listen(net.JoinHostPort(e.edge.HostIP.String(), "0"))
	_, agentPort, _ := net.SplitHostPort(agentA.Addr().String())
	agentB := listen(net.JoinHostPort(replicaBIP, agentPort))
	e.lb = newFailoverLB(t, proxyA.Addr().String(), proxyB.Addr().String())

	egressCfg := filepath.Join(dir, "egress.yaml")
	if _, err := controlplane.WriteEgressSelectorConfig(egressCfg, e.lb.addr(), tca.CACertPath, egress.CertPath, egress.KeyPath); err != nil {
		t.Fatal(err)
	}
	e.cp = controlplane.StartForTest(t, controlplane.Options{EgressSelectorConfigFile: egressCfg,
		KubeletPreferredAddressTypes: o.preferredAddressTypes})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{{"apply", "-k", repoPath("manifests", "vnode")}, {"apply", "-f", repoPath("manifests", "tunnel", "rbac.yaml")}} {
		if out, err := e.cp.Kubectl(ctx, args...).CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	// The node kubelets here listen on the node's address, not loopback:
	// take the kubelet port off the default localhost list.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: tun.ConfigMapNamespace, Name: tun.ConfigMapName},
		Data: map[string]string{tun.KeyLocalhostPorts: "10266, 10267"}}
	if _, err := e.cp.Client.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The server runs as its ServiceAccount would, so the RBAC manifest is
	// what it is allowed.
	kube, err := e.cp.UserConfig("system:serviceaccount:kube-system:edge-tunnel-server", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		t.Fatal(err)
	}
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{akID: akSecret}, Runtime: "process",
		Delays: emulator.Delays{Scheduling: 50 * time.Millisecond, Pending: 50 * time.Millisecond}})
	e.emu = ep

	opts := tun.ServerRunOptions{
		Kube: kube, AgentCertFile: serving.CertPath, AgentKeyFile: serving.KeyPath, AgentCAFile: e.cp.PKI.CACertPath,
		ProxyCertFile: serving.CertPath, ProxyKeyFile: serving.KeyPath, ProxyCAFile: tca.CACertPath,
		ProxyClientNames: []string{"kube-apiserver-egress", "metrics-scraper"}, DialTimeout: 5 * time.Second}
	e.server = &tunnelServer{t: t, agentAddr: agentA.Addr().String(), proxyAddr: proxyA.Addr().String(), opts: opts}
	e.server.opts.Log = e.log.WithField("side", "server-a")
	e.serverB = &tunnelServer{t: t, agentAddr: agentB.Addr().String(), proxyAddr: proxyB.Addr().String(), opts: opts}
	e.serverB.opts.Log = e.log.WithField("side", "server-b")
	e.server.start(agentA, proxyA)
	t.Cleanup(e.server.stop)
	e.serverB.start(agentB, proxyB)
	t.Cleanup(e.serverB.stop)
	return e
}

// newEdgeHost makes an edge host: a network namespace whose loopback holds
// the node's address nodeIP (every edge host the same one, as NAT-ed edge
// sites reuse private addresses), with routes out to both replicas. It
// must come after replica A's address exists (newEnv's first edge host
// makes it).
func (e *env) newEdgeHost(t *testing.T, subnet int) *netns.Host {
	t.Helper()
	h := netns.New(t, subnet)
	if err := h.AddAddress(nodeIP + "/32"); err != nil {
		t.Fatal(err)
	}
	routes := [][]string{{"-n", h.Name, "route", "replace", replicaBIP + "/32", "via", h.HostIP.String()}}
	if e.edge != nil { // replica A listens on the first edge host's link address
		routes = append(routes, []string{"-n", h.Name, "route", "replace", e.edge.HostIP.String() + "/32", "via", h.HostIP.String()})
	}
	for _, args := range routes {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	return h
}

// agentPort is the port both replicas take agents on.
func (e *env) agentPort() string {
	_, p, _ := net.SplitHostPort(e.server.agentAddr)
	return p
}

// resolveReplicas is the agent's DNS: the headless name resolves to both
// replicas, as a headless Service's name does to its pods.
func (e *env) resolveReplicas(context.Context, string) ([]string, error) {
	return []string{e.edge.HostIP.String(), replicaBIP}, nil
}

// nodeCert is the node's cluster client certificate, system:vnode:<node>.
func (e *env) nodeCert(t *testing.T, node string) *certs.KeyPair {
	t.Helper()
	return e.clientCert(t, identity.VNodeUser(node), identity.VNodesGroup)
}

// clientCert is a cluster client certificate for user in group.
func (e *env) clientCert(t *testing.T, user, group string) *certs.KeyPair {
	t.Helper()
	cert, err := e.cp.PKI.ClientCert("agent-"+strings.ReplaceAll(user, ":", "-"), user, group)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := certs.NewKeyPair(cert.CertPath, cert.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// agentRun is a running agent that a test can restart, as a DaemonSet
// would restart its pod.
type agentRun struct {
	t      *testing.T
	e      *env
	node   string
	host   *netns.Host    // the edge host it runs on
	cert   *certs.KeyPair // its client certificate
	agent  *tun.Agent
	cancel context.CancelFunc
	done   chan struct{}

	// configure, if set, changes the agent's configuration (a gateway's).
	configure func(*tun.AgentConfig)
}

// startAgent runs the agent as the edge node's: dialing out from its
// namespace, with the node's client certificate, to every replica.
func (e *env) startAgent(t *testing.T, node string) *agentRun {
	t.Helper()
	return e.startAgentOn(t, e.edge, node, e.nodeCert(t, node))
}

// startAgentOn runs an agent on edge host h with certificate cert.
func (e *env) startAgentOn(t *testing.T, h *netns.Host, node string, cert *certs.KeyPair) *agentRun {
	t.Helper()
	return e.startAgentWith(t, h, node, cert, nil)
}

// startAgentWith runs an agent on edge host h whose configuration
// configure changes.
func (e *env) startAgentWith(t *testing.T, h *netns.Host, node string, cert *certs.KeyPair, configure func(*tun.AgentConfig)) *agentRun {
	t.Helper()
	r := &agentRun{t: t, e: e, node: node, host: h, cert: cert, configure: configure}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *agentRun) start() {
	t, e := r.t, r.e
	t.Helper()
	// The server's certificate is from the tunnel CA.
	ca, err := certs.NewCABundle(e.tca.CACertPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tun.AgentConfig{Server: net.JoinHostPort(serverName, e.agentPort()), Cert: r.cert, CA: ca,
		Resolve: e.resolveReplicas, Addresses: []string{nodeIP}, Dial: r.host.Dial, DialTarget: r.host.Dial,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, DrainTimeout: time.Second,
		Log: e.log.WithField("side", "agent"), Metrics: tun.NewMetrics(prometheus.NewRegistry())}
	if r.configure != nil {
		r.configure(&cfg)
	}
	a, err := tun.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.agent, r.cancel, r.done = a, cancel, make(chan struct{})
	go func() { defer close(r.done); _ = a.Run(ctx) }()
}

func (r *agentRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// restart stops the agent (it drains for at most its DrainTimeout) and
// starts a new one with the same configuration.
func (r *agentRun) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

// startNode runs a virtual node whose kubelet API listens only on the edge
// host's own address.
func (e *env) startNode(t *testing.T, name string) {
	t.Helper()
	e.startNodeWith(t, name, 10250, nil)
}

// startNodeWith runs a virtual node whose kubelet API listens on the edge
// host's own address and port; with tunnel, its agent runs in-process.
func (e *env) startNodeWith(t *testing.T, name string, port int, tunnel *vnode.TunnelOptions) {
	t.Helper()
	e.startNodeOn(t, e.edge, nodeIP, name, port, tunnel)
}

// startNodeOn runs a virtual node whose kubelet API listens on edge host
// h's address ip (nodeIP, or one added to h), its InternalIP.
func (e *env) startNodeOn(t *testing.T, h *netns.Host, ip, name string, port int, tunnel *vnode.TunnelOptions) {
	t.Helper()
	cfg, err := e.cp.UserConfig("system:vnode:"+name, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.ListenOn(ip, port)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := e.cp.PKI.ServingCert("kubelet-"+name, []string{name}, []net.IP{net.ParseIP(ip)})
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
			Node: nodeobject.Config{Name: name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, InternalIP: ip,
				KubeletPort: int32(port), KubeletVersion: "v1.35.4-vnode",
				Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("100")}},
			Pods: translate.NodeSettings{ClusterName: "tunnel", NodeName: name, VSwitchIDs: []string{"vsw-t"}, SecurityGroupID: "sg-t",
				ClusterDNS: []string{"10.0.0.10"}, ClusterDomain: "cluster.local"},
			Cloud: client, Checker: client, Kube: cfg, Listener: l,
			ClientCAFile: e.cp.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath,
			Version: "tunnel-e2e", SyncInterval: 500 * time.Millisecond, GCInterval: 2 * time.Second, LogPollInterval: 200 * time.Millisecond,
			Log: logrus.NewEntry(logger), Ready: ready, Tunnel: tunnel,
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
