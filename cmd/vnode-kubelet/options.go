package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/memlimit"
	"github.com/vnode-project/vnode/internal/version"
	"github.com/vnode-project/vnode/provider/bootstrap"
	"github.com/vnode-project/vnode/provider/kubeletapi"
	"github.com/vnode-project/vnode/provider/vnode"
)

type options struct {
	configPath          string
	contextName         string
	nodeName            string
	clusterName         string
	kubeconfig          string
	bootstrapKubeconfig string
	certDir             string
	listen              string
	nodeIP              string
	clientCA            string
	servingCert         string
	servingKey          string
	rotateServerCerts   bool
	clusterDNS          string
	clusterDomain       string
	syncInterval        time.Duration
	gcInterval          time.Duration
	profiling           bool
	logLevel            string
	tunnelServer        string
	tunnelServerName    string
	tunnelCA            string
	anonymousAuth       bool
	kubeAPIQPS          float32
	kubeAPIBurst        int
	memoryLimit         string
	maxLogStreams       int
	eciRateLimits       map[string]int
}

func (o *options) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.configPath, "config", "", "vnode config file (default $VNODE_CONFIG or ~/.vnode/config)")
	f.StringVar(&o.contextName, "context", "", "context of the config file to use (default: current-context)")
	f.StringVar(&o.nodeName, "nodename", "", "node name (default: the context's vnode-name, else <region-id>.<virtual-node-id>)")
	f.StringVar(&o.clusterName, "cluster-name", "", "cluster name tagged on every instance, so GC never touches another cluster's (default: the API server host)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the virtual node's identity (default: the context's kubeconfig)")
	f.StringVar(&o.bootstrapKubeconfig, "bootstrap-kubeconfig", "", "bootstrap-token kubeconfig: obtain and rotate a client certificate for system:vnode:<node> and write --kubeconfig")
	f.StringVar(&o.certDir, "cert-dir", "", "where bootstrapped client and rotated serving certificates are kept (default: pki/ next to --kubeconfig)")
	f.StringVar(&o.listen, "listen", ":10250", "kubelet API address")
	f.StringVar(&o.nodeIP, "node-ip", "", "address the node advertises for its kubelet API (default: the first non-loopback address)")
	f.StringVar(&o.clientCA, "client-ca-file", "", "CA verifying client certificates on the kubelet API (the cluster CA)")
	f.StringVar(&o.servingCert, "tls-cert-file", "", "serving certificate of the kubelet API")
	f.StringVar(&o.servingKey, "tls-private-key-file", "", "serving key of the kubelet API")
	f.BoolVar(&o.rotateServerCerts, "rotate-server-certificates", false, "request the kubelet API's serving certificate from the cluster (a kubernetes.io/kubelet-serving CSR as system:vnode:<node>, approved by vnode-approver), keep it in --cert-dir and renew it before it expires; instead of --tls-cert-file/--tls-private-key-file")
	f.StringVar(&o.clusterDNS, "cluster-dns", "", "comma-separated cluster DNS addresses for ClusterFirst pods")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "cluster domain for DNS search paths")
	f.DurationVar(&o.syncInterval, "sync-interval", 5*time.Second, "how often the node's instances are polled for status changes (changed ones are then read in full); every sixth time all statuses are listed")
	f.DurationVar(&o.gcInterval, "gc-interval", time.Minute, "how often every instance is read in full and orphaned instances are collected (less often on a large node: the full list keeps to a tenth of ECI's DescribeContainerGroups quota, every 2.5m at 10,000 pods)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.tunnelServer, "tunnel-server", "", "host:port of the edge tunnel servers: run the tunnel agent in-process, authenticated by the node's own client certificate (system:vnode:<node>), and be Ready only while it holds a session")
	f.StringVar(&o.tunnelServerName, "tunnel-server-name", "", "name in the tunnel servers' certificate (default: --tunnel-server's host)")
	// The default keeps up with ECI's CreateContainerGroup quota (1,000 a
	// minute, ~16.7 pods a second) at ~5 API requests per starting pod
	// (6.7 over a pod's life, BENCHMARKS.md), so a burst waits on the
	// cloud, not on the node: ~83/s, with a fifth more for headroom.
	f.Float32Var(&o.kubeAPIQPS, "kube-api-qps", 100, "API client queries per second (the default keeps up with ECI's create quota at ~5 requests per starting pod; client-go's 5 cannot keep up with hundreds of pods)")
	f.IntVar(&o.kubeAPIBurst, "kube-api-burst", 200, "API client burst")
	f.StringToIntVar(&o.eciRateLimits, "eci-rate-limits", nil, "ECI calls per minute the node makes, by action, e.g. CreateContainerGroup=500,DeleteContainerGroup=500 when nodes share an account; each action has its own bucket, at ECI's published quota by default; -1 lifts an action's limit")
	f.BoolVar(&o.profiling, "profiling", true, "serve Go's profiles at /debug/pprof/ on the kubelet API, to callers allowed nodes/proxy (the kubelet's enableProfilingHandler)")
	f.BoolVar(&o.anonymousAuth, "anonymous-auth", false, "admit kubelet API requests without credentials as system:anonymous, still authorised by SubjectAccessReview (needed for pods/<node-pod>/proxy)")
	f.IntVar(&o.maxLogStreams, "max-log-streams", kubeletapi.DefaultMaxLogStreams, "kubectl logs served at once; more are answered 429 Too Many Requests")
	f.StringVar(&o.tunnelCA, "tunnel-ca", "", "CA bundle verifying the tunnel servers (required with --tunnel-server)")
	f.StringVar(&o.memoryLimit, "memory-limit", memlimit.Auto, memlimit.Usage)
}

func run(parent context.Context, o options) error {
	ctx, stop, logger, err := cli.Start(parent, o.logLevel)
	if err != nil {
		return err
	}
	defer stop()
	log := logrus.NewEntry(logger)
	if err := memlimit.Set(o.memoryLimit, log); err != nil {
		return err
	}
	if o.kubeAPIQPS <= 0 || o.kubeAPIBurst <= 0 {
		return errors.New("--kube-api-qps and --kube-api-burst must be positive")
	}
	if _, err := eci.RateLimits(o.eciRateLimits); err != nil {
		return fmt.Errorf("--eci-rate-limits: %w", err)
	}

	// Before TLS bootstrap, which may wait long for its approval.
	if err := vnode.CheckServing(vnode.Settings{ClientCAFile: o.clientCA, CertFile: o.servingCert, KeyFile: o.servingKey,
		RotateServerCertificates: o.rotateServerCerts, CertDir: "--cert-dir"}); err != nil {
		return err
	}
	cc, err := loadContext(o)
	if err != nil {
		return err
	}
	nodeName, err := vnode.NodeName(cc, o.nodeName)
	if err != nil {
		return err
	}
	kube, err := kubeConfig(ctx, o, cc, nodeName, log)
	if err != nil {
		return err
	}
	kube.QPS, kube.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	kubeconfigPath, err := cc.KubeconfigPath()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	var dns []string
	if o.clusterDNS != "" {
		dns = strings.Split(o.clusterDNS, ",")
	}
	opts, err := vnode.FromContext(cc, vnode.Settings{
		NodeName: nodeName, ClusterName: o.clusterName, Kube: kube, Listener: l, NodeIP: o.nodeIP,
		ClientCAFile: o.clientCA, CertFile: o.servingCert, KeyFile: o.servingKey,
		RotateServerCertificates: o.rotateServerCerts, CertDir: certDir(o, kubeconfigPath),
		ClusterDNS: dns, ClusterDomain: o.clusterDomain,
		KubeletVersion: version.Kubelet(), Version: version.Version(),
		SyncInterval: o.syncInterval, GCInterval: o.gcInterval, Log: log, ECIRateLimits: o.eciRateLimits,
	})
	if err != nil {
		return err
	}
	opts.AnonymousAuth = o.anonymousAuth
	opts.Profiling = o.profiling
	opts.MaxLogStreams = o.maxLogStreams
	if opts.Tunnel, err = tunnelOptions(o, cc, kube); err != nil {
		return err
	}
	return vnode.Run(ctx, opts)
}

// tunnelOptions runs the agent with the node's own client certificate: the
// files of its kubeconfig, or the pair TLS bootstrap keeps rotating.
func tunnelOptions(o options, cc *config.Context, kube *rest.Config) (*vnode.TunnelOptions, error) {
	if o.tunnelServer == "" {
		if o.tunnelCA != "" || o.tunnelServerName != "" {
			return nil, fmt.Errorf("--tunnel-ca and --tunnel-server-name need --tunnel-server")
		}
		return nil, nil
	}
	if o.tunnelCA == "" {
		return nil, fmt.Errorf("--tunnel-server needs --tunnel-ca to verify the servers")
	}
	t := &vnode.TunnelOptions{Server: o.tunnelServer, ServerName: o.tunnelServerName, CAFile: o.tunnelCA}
	switch {
	case o.bootstrapKubeconfig != "":
		path, err := cc.KubeconfigPath()
		if err != nil {
			return nil, err
		}
		t.CertFile = filepath.Join(certDir(o, path), "vnode-client-current.pem")
	case kube.TLSClientConfig.CertFile != "":
		t.CertFile, t.KeyFile = kube.TLSClientConfig.CertFile, kube.TLSClientConfig.KeyFile
	default:
		return nil, fmt.Errorf("--tunnel-server needs the node's client certificate in files: the kubeconfig has none (use client-certificate/client-key, or --bootstrap-kubeconfig)")
	}
	return t, nil
}

func loadContext(o options) (*config.Context, error) {
	path := o.configPath
	if path == "" {
		var err error
		if path, err = config.DefaultPath(); err != nil {
			return nil, err
		}
	}
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	cc, err := f.Context(o.contextName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cc.ApplyEnv()
	if o.kubeconfig != "" {
		cc.Kubeconfig = o.kubeconfig
	}
	if err := cc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cc, nil
}

// kubeConfig is the node's identity: the context's kubeconfig, or one TLS
// bootstrap obtains (and keeps renewing).
func kubeConfig(ctx context.Context, o options, cc *config.Context, nodeName string, log *logrus.Entry) (*rest.Config, error) {
	path, err := cc.KubeconfigPath()
	if err != nil {
		return nil, err
	}
	if o.bootstrapKubeconfig == "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	c, err := bootstrap.Start(ctx, bootstrap.Config{
		NodeName: nodeName, BootstrapKubeconfig: o.bootstrapKubeconfig, CertDir: certDir(o, path), KubeconfigPath: path, Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("TLS bootstrap: %w", err)
	}
	go func() { <-ctx.Done(); c.Stop() }()
	return c.RESTConfig(), nil
}

// certDir is where TLS bootstrap and serving rotation keep the node's
// certificates.
func certDir(o options, kubeconfigPath string) string {
	if o.certDir != "" {
		return o.certDir
	}
	return filepath.Join(filepath.Dir(kubeconfigPath), "pki")
}
