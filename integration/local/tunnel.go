package local

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnode-project/vnode/eci/emulator/vnodehost"
	"github.com/vnode-project/vnode/integration/controlplane"
)

const (
	tunnelNamespace = "kube-system" // manifests/tunnel's
	tunnelServer    = "edge-tunnel-server"
	// egressClientName is the CN of kube-apiserver's egress client
	// certificate, the only requester the server admits
	// (manifests/tunnel/server.yaml's --proxy-client-names).
	egressClientName = "kube-apiserver-egress"
)

// Tunnel is the running edge tunnel server: kube-apiserver's egress
// selector sends node traffic to it, the node's agent holds a session.
type Tunnel struct {
	// AgentAddr is where agents dial (this side of the node's veth pair).
	AgentAddr string
	// MetricsURL is the server's /metrics; it admits a client certificate
	// from CAFile, such as CertFile/KeyFile, which also verify the server.
	MetricsURL                string
	CAFile, CertFile, KeyFile string
	// HealthURL is its /healthz, open, verified with CAFile.
	HealthURL string

	dir                  string
	proxyAddr, metaAddr  string
	serving              *controlplane.CertPair
	egressSelectorConfig string
}

// prepareTunnel makes, before kube-apiserver starts, what it needs to
// reach nodes through the tunnel: the tunnel's own CA with the server's
// certificate and kube-apiserver's egress client certificate, the
// server's addresses, and the egress selector configuration
// (manifests/tunnel/egress-selector.yaml's shape, pointed at the local
// server). Only the "cluster" egress goes through it: kube-apiserver's
// calls to the kubelet API and node proxy, and also to Service-backed
// webhooks and aggregated APIs; URL webhooks (eci-profile's here) use the
// "controlplane" egress, which stays direct.
func (s *System) prepareTunnel(dir string) (*Tunnel, error) {
	t := &Tunnel{dir: filepath.Join(dir, "tunnel")}
	ca, err := controlplane.NewCA(t.dir, "tunnel-ca")
	if err != nil {
		return nil, err
	}
	t.CAFile = ca.CACertPath
	host := s.listenHost()
	names := []string{tunnelServer, tunnelServer + "." + tunnelNamespace + ".svc", tunnelServer + "-agents." + tunnelNamespace + ".svc"}
	if t.serving, err = ca.ServingCert(tunnelServer, names, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(host)}); err != nil {
		return nil, err
	}
	egress, err := ca.ClientCert("apiserver-egress", egressClientName)
	if err != nil {
		return nil, err
	}
	scraper, err := ca.ClientCert("metrics-scraper", "metrics-scraper")
	if err != nil {
		return nil, err
	}
	t.CertFile, t.KeyFile = scraper.CertPath, scraper.KeyPath
	if t.AgentAddr, err = freeAddr(host); err != nil {
		return nil, err
	}
	if t.proxyAddr, err = freeAddr("127.0.0.1"); err != nil {
		return nil, err
	}
	if t.metaAddr, err = freeAddr("127.0.0.1"); err != nil {
		return nil, err
	}
	t.MetricsURL = "https://" + t.metaAddr + "/metrics"
	t.HealthURL = "https://" + t.metaAddr + "/healthz"
	t.egressSelectorConfig = filepath.Join(t.dir, "egress-selector.yaml")
	cfg, err := controlplane.WriteEgressSelectorConfig(t.egressSelectorConfig, t.proxyAddr, ca.CACertPath, egress.CertPath, egress.KeyPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.out, "# kube-apiserver --egress-selector-config-file=%s: its node traffic goes to edge-tunnel-server\n%s",
		t.egressSelectorConfig, indent(string(cfg)))
	return t, nil
}

// hostedTunnel is what the emulator's hosted nodes join (vnode-kubelet's
// --tunnel-server, --tunnel-ca).
func (t *Tunnel) hostedTunnel() vnodehost.Tunnel {
	return vnodehost.Tunnel{Server: t.AgentAddr, ServerName: tunnelServer, CAFile: t.CAFile}
}

// edgeTunnel enables the edge-tunnel add-on and runs its server as a local
// process under the manifest's ServiceAccount, as its Deployment would.
func (s *System) edgeTunnel(ctx context.Context) error {
	t := s.Tunnel
	if _, err := s.vnode(ctx, "addon", "enable", "edge-tunnel"); err != nil {
		return err
	}
	if err := s.outsideCluster(ctx, tunnelNamespace, tunnelServer); err != nil {
		return err
	}
	kubeconfig, err := s.serviceAccountKubeconfig(ctx, tunnelNamespace, tunnelServer)
	if err != nil {
		return err
	}
	if err := s.process(ctx, tunnelServer, "--kubeconfig", kubeconfig,
		"--agent-addr="+t.AgentAddr, "--proxy-addr="+t.proxyAddr, "--meta-addr="+t.metaAddr,
		"--agent-cert="+t.serving.CertPath, "--agent-key="+t.serving.KeyPath, "--agent-ca="+s.CP.PKI.CACertPath,
		"--proxy-ca="+t.CAFile, "--proxy-client-names="+egressClientName, "--metrics-ca="+t.CAFile,
		// kube-apiserver's cluster egress also carries its calls to
		// metrics-server (metrics.go), on this host's loopback here as
		// on the cloud side's pod network in a cluster: no node serves
		// it, so the server dials it itself.
		"--direct-cidrs=127.0.0.1/32"); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(t.CAFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(ca)
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: tunnelServer}}}
	readyz := "https://" + t.metaAddr + "/readyz"
	return s.waitFor(ctx, "edge-tunnel-server to be ready", func(ctx context.Context) (bool, error) {
		resp, err := probe.Get(readyz)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func indent(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString("#   " + l + "\n")
	}
	return b.String()
}
