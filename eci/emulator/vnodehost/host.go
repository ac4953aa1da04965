// Package vnodehost plays the cloud's side of CreateVirtualNode for the
// ECI emulator: each virtual node given a kubeconfig runs as a real
// vnode-kubelet process that joins the cluster with it (TLS bootstrap or
// ServiceAccount), named <region>.<vnd-id> and pointed back at the
// emulator with the creating account's credentials. The node is Pending
// until its Node is Ready. It is Failed, with an event saying why, when its
// process exits, when the API server rejects its credentials (401), or when
// it has not joined within the join timeout (API server unreachable, client
// certificate never approved, Node never Ready); a failed node's process is
// stopped, as is a deleted node's. Run it again on the same emulator state
// after a restart and it starts the nodes again.
package vnodehost

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/internal/config"
)

// Config configures a host.
type Config struct {
	Emulator *emulator.Emulator
	// Endpoint is the emulator's address as the nodes reach it.
	Endpoint string
	// Binary is vnode-kubelet; default: the one beside this executable,
	// then PATH.
	Binary string
	// Dir keeps each node's files and log (Dir/<vnd-id>/).
	Dir      string
	Interval time.Duration // default 500ms
	// JoinTimeout is how long a node may take to be Ready before it is
	// Failed with the reason its last attempt showed; default 5 minutes.
	JoinTimeout time.Duration
	// RejectGrace is how long the API server must keep answering 401 to
	// the node's credentials before the node is Failed at once: a token
	// created a moment ago may not be in the API server's cache yet.
	// Default 5s.
	RejectGrace time.Duration
	Log         logrus.FieldLogger
	// Tunnel, when its Server is set, is the edge tunnel the hosted nodes
	// join, as a cloud-hosted node joins the cluster's: kube-apiserver
	// reaches their kubelet API through it.
	Tunnel Tunnel
	// Network, when its Namespace is set, runs every node's vnode-kubelet
	// in that network namespace, registering and serving its kubelet API
	// on IP: a node address that is not loopback, which kube-apiserver
	// will proxy to. Endpoint and the kubeconfigs' API server must be
	// reachable from there.
	Network Network
}

// Network is the network namespace (a name under /var/run/netns, as `ip
// netns` makes) hosted nodes run in, and their address in it.
//
// The process enters it through `ip netns exec`, which execs the binary in
// place (so the process the host signals is vnode-kubelet itself) rather
// than through setns here: this package is linked into eci-emulator, and
// entering a namespace from Go needs a locked thread that must come back
// intact, which integration/netns already does for tests and a shipped
// binary must not import.
type Network struct {
	Namespace string
	IP        string
}

// Validate checks that a namespace comes with the nodes' address in it,
// one kube-apiserver will proxy to (not loopback).
func (n Network) Validate() error {
	if n.Namespace == "" {
		return nil
	}
	if ip := net.ParseIP(n.IP); ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return fmt.Errorf("network namespace %s needs the nodes' address in it (not loopback), not %q", n.Namespace, n.IP)
	}
	return nil
}

// Tunnel names the edge tunnel servers hosted nodes dial
// (vnode-kubelet's --tunnel-server, --tunnel-server-name, --tunnel-ca).
type Tunnel struct {
	Server, ServerName, CAFile string
}

// Reasons of a failed node's event.
const (
	ReasonExited          = "NodeExited"
	ReasonStartFailed     = "StartFailed"
	ReasonRejected        = "CredentialsRejected"
	ReasonUnreachable     = "APIServerUnreachable"
	ReasonCertNotApproved = "CertificateNotApproved"
	ReasonNodeNotReady    = "NodeNotReady"
)

// DefaultJoinTimeout is Config.JoinTimeout's default: the cloud takes a
// minute or two to start a virtual node.
const DefaultJoinTimeout = 5 * time.Minute

const (
	defaultRejectGrace       = 5 * time.Second
	defaultReconcileInterval = 500 * time.Millisecond
)

// Host runs the emulator's virtual nodes.
type Host struct {
	cfg   Config
	nodes map[string]*node
}

type node struct {
	info    emulator.VirtualNodeToHost
	dir     string
	cmd     *exec.Cmd
	done    chan struct{}
	ready   bool
	started time.Time
	// rejectedSince is when the API server began answering 401 (zero
	// while it does not).
	rejectedSince time.Time
	last          probe
	// client asks as the node, built from kubeconfig: each probe reuses it
	// (and its connection) until the node's credentials change.
	client     kubernetes.Interface
	kubeconfig []byte
}

// New checks cfg and finds vnode-kubelet.
func New(cfg Config) (*Host, error) {
	if cfg.Emulator == nil || cfg.Endpoint == "" || cfg.Dir == "" {
		return nil, errors.New("vnodehost: Emulator, Endpoint and Dir are required")
	}
	if err := cfg.Network.Validate(); err != nil {
		return nil, fmt.Errorf("vnodehost: %w", err)
	}
	if cfg.Binary == "" {
		bin, err := findBinary()
		if err != nil {
			return nil, err
		}
		cfg.Binary = bin
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultReconcileInterval
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = DefaultJoinTimeout
	}
	if cfg.RejectGrace <= 0 {
		cfg.RejectGrace = defaultRejectGrace
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	return &Host{cfg: cfg, nodes: map[string]*node{}}, nil
}

func findBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		bin := filepath.Join(filepath.Dir(self), "vnode-kubelet")
		if st, err := os.Stat(bin); err == nil && !st.IsDir() {
			return bin, nil
		}
	}
	bin, err := exec.LookPath("vnode-kubelet")
	if err != nil {
		return "", errors.New("vnodehost: vnode-kubelet is neither beside this executable nor on PATH")
	}
	return bin, nil
}

// Run hosts the nodes until ctx ends, then stops them.
func (h *Host) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		h.reconcile(ctx)
		select {
		case <-ctx.Done():
			for id := range h.nodes {
				h.stop(id)
			}
			return nil
		case <-t.C:
		}
	}
}

func (h *Host) reconcile(ctx context.Context) {
	want := map[string]bool{}
	for _, v := range h.cfg.Emulator.HostVirtualNodes() {
		want[v.ID] = true
		n, running := h.nodes[v.ID]
		if !running {
			if v.Status == "Failed" {
				continue
			}
			if err := h.start(v); err != nil {
				h.cfg.Emulator.ReportVirtualNode(v.ID, "Failed", ReasonStartFailed, err.Error())
			}
			continue
		}
		select {
		case <-n.done:
			h.cfg.Emulator.ReportVirtualNode(v.ID, "Failed", ReasonExited, "vnode-kubelet exited: "+lastLines(filepath.Join(n.dir, "vnode-kubelet.log"), 3))
			delete(h.nodes, v.ID)
			continue
		default:
		}
		if n.ready {
			continue
		}
		n.last = probeNode(ctx, n)
		if n.last.ready {
			n.ready = true
			h.cfg.Emulator.ReportVirtualNode(v.ID, "Ready", "NodeReady", "Node "+v.NodeName+" is Ready in the cluster")
			continue
		}
		if reason, msg, failed := h.judge(n, time.Now()); failed {
			h.cfg.Log.WithFields(logrus.Fields{"virtualNode": v.ID, "node": v.NodeName, "reason": reason}).Warn("virtual node failed to join")
			h.cfg.Emulator.ReportVirtualNode(v.ID, "Failed", reason, msg)
			h.stop(v.ID)
		}
	}
	for id := range h.nodes {
		if !want[id] {
			h.stop(id)
		}
	}
}

// start writes the node's files and starts its vnode-kubelet.
func (h *Host) start(v emulator.VirtualNodeToHost) error {
	dir := filepath.Join(h.cfg.Dir, v.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kc, err := clientcmd.Load(v.KubeConfig)
	if err != nil {
		return fmt.Errorf("the kubeconfig does not parse: %w", err)
	}
	var ca []byte
	for _, c := range kc.Clusters {
		ca = c.CertificateAuthorityData
	}
	if len(ca) == 0 {
		return errors.New("the kubeconfig carries no cluster CA")
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	files := map[string][]byte{"ca.crt": ca}
	nodeIP := h.nodeIP()
	args := []string{"--config", filepath.Join(dir, "config"), "--nodename", v.NodeName, "--node-ip", nodeIP,
		"--client-ca-file", filepath.Join(dir, "ca.crt"), "--memory-limit", "0", "--sync-interval", "1s"}
	if v.TLSBootstrap {
		files["bootstrap-kubeconfig"] = v.KubeConfig
		// The cluster signs its serving certificate, as it does the
		// cloud's nodes' (a kubelet-serving CSR vnode-approver approves).
		args = append(args, "--bootstrap-kubeconfig", filepath.Join(dir, "bootstrap-kubeconfig"), "--rotate-server-certificates")
	} else {
		files["kubeconfig"] = v.KubeConfig
		// A ServiceAccount is no node identity the approver would sign a
		// serving certificate for: a self-signed pair the API server
		// cannot verify (see the README).
		certPEM, keyPEM, err := servingPair(v.NodeName, nodeIP)
		if err != nil {
			return err
		}
		files["tls.crt"], files["tls.key"] = certPEM, keyPEM
		args = append(args, "--tls-cert-file", filepath.Join(dir, "tls.crt"), "--tls-private-key-file", filepath.Join(dir, "tls.key"))
	}
	if v.ClusterDNS != "" {
		args = append(args, "--cluster-dns", v.ClusterDNS)
	}
	if v.ClusterDomain != "" {
		args = append(args, "--cluster-domain", v.ClusterDomain)
	}
	args = append(args, h.tunnelArgs(v)...)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	// A port free here: in a namespace of their own, only the other
	// hosted nodes could hold it.
	port, err := freePort()
	if err != nil {
		return err
	}
	args = append(args, "--listen", net.JoinHostPort(nodeIP, strconv.Itoa(port)))
	f := &config.File{Kind: config.Kind, CurrentContext: "cloud", Contexts: []config.Context{{
		Name: "cloud", RegionID: v.Region, AccessKeyID: v.AccessKeyID, AccessKeySecret: v.AccessKeySecret,
		VSwitchIDs: strings.Split(v.VSwitchID, ","), ZoneIDs: config.StringList{v.ZoneID}, SecurityGroupID: v.SecurityGroupID,
		Kubeconfig: kubeconfig, Endpoint: h.cfg.Endpoint, VirtualNodeID: v.ID,
	}}}
	if err := f.Save(filepath.Join(dir, "config")); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "vnode-kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(h.cfg.Binary, args...)
	if ns := h.cfg.Network.Namespace; ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, h.cfg.Binary}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Gone with the host even if it dies without stopping its nodes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", h.cfg.Binary, err)
	}
	n := &node{info: v, dir: dir, cmd: cmd, done: make(chan struct{}), started: time.Now()}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(n.done)
	}()
	h.nodes[v.ID] = n
	h.cfg.Emulator.ReportVirtualNode(v.ID, "Pending", "Starting", "vnode-kubelet started, joining the cluster as "+v.NodeName)
	h.cfg.Log.WithFields(logrus.Fields{"virtualNode": v.ID, "node": v.NodeName, "pid": cmd.Process.Pid}).Info("hosting virtual node")
	return nil
}

// tunnelArgs has a node join the edge tunnel. Its agent authenticates
// with the node's own client certificate, which only a TLS-bootstrapped
// node has here: a ServiceAccount-mode node runs without the tunnel, and
// says so in its VirtualNode's events.
func (h *Host) tunnelArgs(v emulator.VirtualNodeToHost) []string {
	t := h.cfg.Tunnel
	if t.Server == "" {
		return nil
	}
	if !v.TLSBootstrap {
		h.cfg.Emulator.ReportVirtualNode(v.ID, "Pending", "TunnelSkipped",
			"a ServiceAccount-mode node has no client certificate to join the edge tunnel with: it runs without it")
		return nil
	}
	args := []string{"--tunnel-server", t.Server, "--tunnel-ca", t.CAFile}
	if t.ServerName != "" {
		args = append(args, "--tunnel-server-name", t.ServerName)
	}
	return args
}

// stop ends a node's process: SIGTERM, then SIGKILL after 10s.
func (h *Host) stop(id string) {
	n := h.nodes[id]
	delete(h.nodes, id)
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// probe is what one look at the cluster, with the node's own credentials,
// showed.
type probe struct {
	ready bool
	// rejected: the API server answered 401 to the credentials.
	rejected bool
	// unreachable: no HTTP answer (connection, TLS or timeout); err says.
	unreachable bool
	// joined: the node holds its own credentials (the bootstrapped
	// kubeconfig, or the ServiceAccount's it was given).
	joined bool
	server string
	err    error
}

// probeNode asks the cluster, with the node's own credentials (the
// bootstrapped kubeconfig; before bootstrap, the bootstrap one), for its
// Node: Ready, or why not. A bootstrap token may not read Nodes, so a 403
// (like a 404) only says that the API server answered and accepted them.
func probeNode(ctx context.Context, n *node) probe {
	var p probe
	path := filepath.Join(n.dir, "kubeconfig")
	data, err := os.ReadFile(path)
	if err == nil {
		p.joined = true
	} else if n.info.TLSBootstrap {
		data, err = os.ReadFile(filepath.Join(n.dir, "bootstrap-kubeconfig"))
	}
	if err != nil {
		p.err = err
		return p
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		p.err = err
		return p
	}
	p.server = cfg.Host
	if n.client == nil || !bytes.Equal(n.kubeconfig, data) {
		cfg.Timeout = 5 * time.Second
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			p.err = err
			return p
		}
		n.client, n.kubeconfig = client, data
	}
	node, err := n.client.CoreV1().Nodes().Get(ctx, n.info.NodeName, metav1.GetOptions{})
	switch {
	case err == nil:
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				p.ready = c.Status == corev1.ConditionTrue
			}
		}
		return p
	case apierrors.IsUnauthorized(err):
		p.rejected = true
	case apierrors.IsForbidden(err) || apierrors.IsNotFound(err):
	default:
		var status apierrors.APIStatus
		p.unreachable = !errors.As(err, &status)
	}
	p.err = err
	return p
}

// judge says whether a node that is not Ready has failed, and why: at once
// when the API server has rejected its credentials for RejectGrace; after
// JoinTimeout with what its last probe showed.
func (h *Host) judge(n *node, now time.Time) (reason, message string, failed bool) {
	p := n.last
	if !p.rejected {
		n.rejectedSince = time.Time{}
	} else if n.rejectedSince.IsZero() {
		n.rejectedSince = now
	}
	mode := "ServiceAccount token"
	if n.info.TLSBootstrap {
		mode = "bootstrap token"
	}
	timedOut := now.Sub(n.started) >= h.cfg.JoinTimeout
	if p.rejected && (now.Sub(n.rejectedSince) >= h.cfg.RejectGrace || timedOut) {
		if p.joined && n.info.TLSBootstrap {
			mode = "client certificate"
		}
		return ReasonRejected, fmt.Sprintf("the API server %s rejects the node's %s (401 Unauthorized): "+
			"it is unknown, expired or revoked; run `vnode cluster setup` again and create the node with the new kubeconfig", p.server, mode), true
	}
	if !timedOut {
		return "", "", false
	}
	within := "within " + h.cfg.JoinTimeout.String()
	switch {
	case p.unreachable:
		return ReasonUnreachable, fmt.Sprintf("the node could not reach the API server %s %s: %v", p.server, within, p.err), true
	case n.info.TLSBootstrap && !p.joined:
		return ReasonCertNotApproved, fmt.Sprintf("the node's client certificate request (CSR by %s) was not approved %s: "+
			"is vnode-approver running (`vnode addon enable vnode-approver`, `vnode addon list`)?", n.info.NodeName, within), true
	}
	why := "its Node was never registered or never Ready"
	if p.err != nil {
		why += " (" + p.err.Error() + ")"
	}
	return ReasonNodeNotReady, fmt.Sprintf("the node did not become Ready %s: %s; its log ends: %s", within, why,
		lastLines(filepath.Join(n.dir, "vnode-kubelet.log"), 3)), true
}

// nodeIP is the address hosted nodes register and serve on.
func (h *Host) nodeIP() string {
	if h.cfg.Network.Namespace != "" {
		return h.cfg.Network.IP
	}
	return "127.0.0.1"
}

func servingPair(name, ip string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP(ip)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
