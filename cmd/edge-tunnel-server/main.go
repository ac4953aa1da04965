// Command edge-tunnel-server routes kube-apiserver's node traffic (its
// egress selector's HTTP CONNECT) to the edge tunnel agents that dialed in.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/internal/version"
	"github.com/vnode-project/vnode/tunnel"
)

func main() { cli.Execute(newCommand()) }

type options struct {
	kubeconfig                             string
	agentAddr, proxyAddr, unixSocket, meta string
	agentCert, agentKey, agentCA           string
	proxyCert, proxyKey, proxyCA           string
	proxyClientNames                       []string
	directCIDRs                            []string
	metricsCA                              string
	tokenUsers, tokenGroups                []string
	dialTimeout                            time.Duration
	maxPendingDials                        int
	logLevel                               string

	replicaName, namespace, replicaService string
	certServices, certExtraSANs            []string
	certDir, caSecret, caConfigMap         string
	clusterDomain                          string
	certValidity                           time.Duration
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:     "edge-tunnel-server",
		Version: version.String(),
		Short:   "Route CONNECT requests to nodes through the sessions their agents dialed in",
		Long: `edge-tunnel-server accepts mutually authenticated TLS 1.3 sessions from
edge-tunnel-agents (the node served is the one their certificate names) and
serves HTTP CONNECT nodeIP-or-name:port to kube-apiserver's egress selector
(egress "cluster", HTTPConnect over TLS with a client certificate, or a unix
socket). A node name always routes; an address routes only when exactly one
Node lists it (a clash is refused naming both nodes: reach such nodes by name,
kube-apiserver --kubelet-preferred-address-types=Hostname,...). Ports come
from ConfigMap kube-system/edge-tunnel-server-cfg.

Each replica names itself to agents and announces the replica count (the
ready endpoints of --replica-service), so agents behind one load-balanced
address dial until they hold a session to every replica. Without
--agent-cert the server issues its own serving certificate, from the tunnel
CA in Secret --ca-secret (created in it on first start), for the names and
current addresses of --cert-services, and issues it again when they change;
agents trust the CA from ConfigMap --ca-configmap.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	f.StringVar(&o.agentAddr, "agent-addr", ":10262", "address agents dial")
	f.StringVar(&o.proxyAddr, "proxy-addr", ":10263", "address of the TLS CONNECT listener (empty disables)")
	f.StringVar(&o.unixSocket, "unix-socket", "", "path of a unix socket CONNECT listener for a co-located kube-apiserver: created 0600 in a directory of its own, which must be 0700 and owned by the server's user (created so if missing)")
	f.StringVar(&o.meta, "meta-addr", ":10265", "HTTPS address of /metrics (authenticated), /healthz and /readyz (open); served with --agent-cert (empty disables)")
	f.StringVar(&o.metricsCA, "metrics-ca", "", "CA bundle of client certificates admitted to /metrics (bearer tokens are always checked with TokenReview and a SubjectAccessReview for get /metrics)")
	f.StringVar(&o.agentCert, "agent-cert", "", "certificate agents see (reloaded when the file changes); empty: the server provisions its own (--cert-*)")
	f.StringVar(&o.agentKey, "agent-key", "", "its key (default: in the certificate file)")
	f.StringVar(&o.agentCA, "agent-ca", "", "CA bundle of agent client certificates (the cluster CA; reloaded)")
	f.StringVar(&o.proxyCert, "proxy-cert", "", "certificate of the CONNECT listener (default: the agent-facing one, provisioned or --agent-cert)")
	f.StringVar(&o.proxyKey, "proxy-key", "", "its key")
	f.StringVar(&o.proxyCA, "proxy-ca", "", "CA bundle of requester client certificates (kube-apiserver's egress client; reloaded)")
	f.StringSliceVar(&o.directCIDRs, "direct-cidrs", nil, "addresses or CIDRs no node serves that the server dials itself for kube-apiserver's cluster egress: the cloud side's pod and Service networks, where aggregated API servers (metrics-server) and Service-backed webhooks run (default none: only nodes are reached)")
	f.StringSliceVar(&o.proxyClientNames, "proxy-client-names", nil, "if set, the only requester certificate CNs accepted")
	f.StringSliceVar(&o.tokenUsers, "token-allowed-users", nil, "admit requesters with a bearer token of these users (TokenReview)")
	f.StringSliceVar(&o.tokenGroups, "token-allowed-groups", nil, "admit requesters with a bearer token in these groups (TokenReview)")
	f.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "limit of a dial through an agent")
	f.IntVar(&o.maxPendingDials, "max-pending-dials", 256, "dials waiting for agents' answers at once; more get 503")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.replicaName, "replica-name", "", "this replica's name to agents, a random suffix added per start (default: $POD_NAME, else the host name)")
	f.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "kube-system"), "namespace of the Services, Secret and ConfigMap below")
	f.StringVar(&o.replicaService, "replica-service", "", "Service whose ready endpoints are the replicas: their count is announced to agents (empty: unknown, agents hold one session per address)")
	f.StringSliceVar(&o.certServices, "cert-services", []string{"x-tunnel-server-svc", "edge-tunnel-server", "edge-tunnel-server-agents"}, "Services whose names and current addresses the provisioned certificate carries")
	f.StringSliceVar(&o.certExtraSANs, "cert-extra-sans", nil, "more names or addresses for the provisioned certificate (e.g. a public DNS name of the load balancer)")
	f.StringVar(&o.certDir, "cert-dir", "/var/lib/edge-tunnel-server/pki", "directory (0700) of the provisioned certificate and key (tls.pem, 0600)")
	f.StringVar(&o.caSecret, "ca-secret", "edge-tunnel-ca", "Secret holding the tunnel CA that signs the provisioned certificate (filled on first start)")
	f.StringVar(&o.caConfigMap, "ca-configmap", "edge-tunnel-ca", "ConfigMap where the tunnel CA certificate is published for agents")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain, for the Services' names")
	f.DurationVar(&o.certValidity, "cert-validity", 30*24*time.Hour, "life of a provisioned certificate (renewed at two thirds)")
	return cmd
}

func run(parent context.Context, o options) error {
	ctx, stop, logger, err := cli.Start(parent, o.logLevel)
	if err != nil {
		return err
	}
	defer stop()
	if o.agentCA == "" {
		return errors.New("--agent-ca is required")
	}
	if o.replicaName == "" {
		o.replicaName = envOr("POD_NAME", hostname())
	}
	if o.proxyAddr != "" && o.proxyCA == "" && len(o.tokenUsers)+len(o.tokenGroups) == 0 {
		return errors.New("--proxy-addr needs --proxy-ca or token authentication: requesters must authenticate")
	}
	direct, err := tunnel.ParseDirectPrefixes(o.directCIDRs)
	if err != nil {
		return fmt.Errorf("--direct-cidrs: %w", err)
	}
	kube, err := cli.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	ro := tunnel.ServerRunOptions{Kube: kube, DirectPrefixes: direct,
		AgentCertFile: o.agentCert, AgentKeyFile: o.agentKey, AgentCAFile: o.agentCA,
		ProxyCertFile: o.proxyCert, ProxyKeyFile: o.proxyKey, ProxyCAFile: o.proxyCA, ProxyClientNames: o.proxyClientNames,
		TokenAllowedUsers: o.tokenUsers, TokenAllowedGroups: o.tokenGroups,
		MetricsCAFile: o.metricsCA, DialTimeout: o.dialTimeout, MaxPendingDials: o.maxPendingDials, Log: logrus.NewEntry(logger),
		Replicas: tunnel.ReplicaOptions{Name: o.replicaName, Namespace: o.namespace, CountService: o.replicaService,
			ServingCert: tunnel.ServingCertConfig{Services: o.certServices, ExtraSANs: o.certExtraSANs, Dir: o.certDir,
				CASecret: o.caSecret, CAConfigMap: o.caConfigMap, ClusterDomain: o.clusterDomain, Validity: o.certValidity}}}
	if ro.AgentListener, err = net.Listen("tcp", o.agentAddr); err != nil {
		return fmt.Errorf("--agent-addr: %w", err)
	}
	if o.proxyAddr != "" {
		if ro.ProxyListener, err = net.Listen("tcp", o.proxyAddr); err != nil {
			return fmt.Errorf("--proxy-addr: %w", err)
		}
	}
	if o.unixSocket != "" {
		if ro.UnixListener, err = tunnel.ListenUnix(o.unixSocket); err != nil {
			return fmt.Errorf("--unix-socket: %w", err)
		}
	}
	if o.meta != "" {
		if ro.MetaListener, err = net.Listen("tcp", o.meta); err != nil {
			return fmt.Errorf("--meta-addr: %w", err)
		}
	}
	return tunnel.RunServer(ctx, ro)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
