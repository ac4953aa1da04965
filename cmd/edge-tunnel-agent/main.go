// Command edge-tunnel-agent runs on a node that can dial out but cannot be
// dialed: it holds a session to every edge-tunnel-server replica and dials,
// on the node, what the servers ask for (the node's own addresses only).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/version"
	"github.com/vnode-project/vnode/tunnel"
)

func main() { cli.Execute(newCommand()) }

type options struct {
	server, serverName     string
	cert, key, ca          string
	addresses              []string
	meta                   string
	metricsCA              string
	metaCert, metaKey      string
	minBackoff, maxBackoff time.Duration
	drain                  time.Duration
	logLevel               string
	gateway                bool
	kubeconfig             string
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:     "edge-tunnel-agent",
		Version: version.String(),
		Short:   "Dial out to the edge tunnel servers and serve their dials on this node",
		Long: `edge-tunnel-agent holds a mutually authenticated TLS 1.3 session to every
edge-tunnel-server replica. --server is one load-balanced address in front of
the replicas (x-tunnel-server-svc) or a name resolving to one address per
replica (a headless Service), resolved again before every attempt: each
replica names itself and announces the replica count, and the agent dials
until it holds one session per replica, dropping a second one to a replica it
holds. Its client certificate names the node it serves (system:node:<node> in
system:nodes, e.g. the kubelet's /var/lib/kubelet/pki/kubelet-client-current.pem,
or system:vnode:<node>).

With --gateway it is also the gateway of its node's network domain: it
carries the traffic of every node of the domain (Raven's proxy mode), so those
nodes need no agent of their own. Which domain a node is in and which nodes
are its gateways are labels only an admin can set on the Node
(node-restriction.kubernetes.io/network-domain=<domain> and
node-restriction.kubernetes.io/network-domain-gateway=true); the agent follows
the domain's Nodes (as its ServiceAccount, or --kubeconfig) and dials only
addresses of its domain's nodes.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "host:port of the tunnel servers: a load balancer in front of every replica, or a name resolving to each")
	f.StringVar(&o.serverName, "server-name", "", "name the servers' certificate must carry (default: --server's host)")
	f.StringVar(&o.cert, "cert", "/var/lib/kubelet/pki/kubelet-client-current.pem", "client certificate (reloaded when the file changes)")
	f.StringVar(&o.key, "key", "", "its key (default: in the certificate file)")
	f.StringVar(&o.ca, "ca", "/etc/kubernetes/pki/ca.crt", "CA bundle verifying the servers: the tunnel CA of ConfigMap kube-system/edge-tunnel-ca (reloaded)")
	f.StringSliceVar(&o.addresses, "node-address", nil, "addresses of this node the agent may dial besides loopback (default: its interface addresses)")
	f.StringVar(&o.meta, "meta-addr", "127.0.0.1:10268", "HTTPS address of /metrics (client certificate from --metrics-ca only), /healthz and /readyz (open) (empty disables)")
	f.StringVar(&o.metricsCA, "metrics-ca", "", "CA bundle of client certificates admitted to /metrics (unset: /metrics refuses everyone)")
	f.StringVar(&o.metaCert, "meta-cert", "", "serving certificate of --meta-addr (default: a self-signed one made at start)")
	f.StringVar(&o.metaKey, "meta-key", "", "its key (default: in the certificate file)")
	f.DurationVar(&o.minBackoff, "min-backoff", time.Second, "first reconnect wait (jittered)")
	f.DurationVar(&o.maxBackoff, "max-backoff", 30*time.Second, "longest reconnect wait")
	f.DurationVar(&o.drain, "drain-timeout", 10*time.Second, "on SIGTERM, how long open streams may finish")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.gateway, "gateway", false, "also carry the traffic of every node of this node's network domain (its Node must be labelled a gateway of it)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "with --gateway: credentials allowed to list and watch Nodes (default: the pod's ServiceAccount; a kubelet's own may read only its Node)")
	return cmd
}

func run(parent context.Context, o options) error {
	ctx, stop, logger, err := cli.Start(parent, o.logLevel)
	if err != nil {
		return err
	}
	defer stop()
	if o.server == "" {
		return errors.New("--server is required")
	}
	cert, err := certs.NewKeyPair(o.cert, o.key)
	if err != nil {
		return err
	}
	ca, err := certs.NewCABundle(o.ca)
	if err != nil {
		return err
	}
	cfg := tunnel.AgentConfig{Server: o.server, ServerName: o.serverName, Cert: cert, CA: ca,
		Addresses: o.addresses, MinBackoff: o.minBackoff, MaxBackoff: o.maxBackoff, DrainTimeout: o.drain,
		Log: logrus.NewEntry(logger)}
	if o.gateway {
		kube, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
		if cfg.Gateway, err = tunnel.GatewayView(ctx, kube); err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	cfg.Metrics = tunnel.NewMetrics(reg)
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		return err
	}
	if o.meta != "" {
		l, err := net.Listen("tcp", o.meta)
		if err != nil {
			return fmt.Errorf("--meta-addr: %w", err)
		}
		auth := &certs.MetricsAuth{Log: logrus.NewEntry(logger).WithField("component", "metrics-auth")}
		if o.metricsCA != "" {
			if auth.CA, err = certs.NewCABundle(o.metricsCA); err != nil {
				return fmt.Errorf("--metrics-ca: %w", err)
			}
		}
		var pair *certs.KeyPair
		if o.metaCert != "" {
			pair, err = certs.NewKeyPair(o.metaCert, o.metaKey)
		} else {
			pair, err = certs.SelfSignedPair("edge-tunnel-agent")
		}
		if err != nil {
			return fmt.Errorf("meta serving certificate: %w", err)
		}
		meta := &http.Server{Handler: tunnel.AgentMetaHandler(reg, a, auth), ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: certs.MetaTLSConfig(pair, auth)}
		go func() { _ = meta.ServeTLS(l, "", "") }()
		defer meta.Close()
	}
	return a.Run(ctx)
}
