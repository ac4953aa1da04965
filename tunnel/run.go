package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/internal/certs"
)

// ServerRunOptions wire a server replica to the cluster: what
// cmd/edge-tunnel-server parses its flags into, and what tests run
// in-process.
type ServerRunOptions struct {
	Kube *rest.Config

	// AgentListener takes agent sessions. ProxyListener (TLS is added)
	// and UnixListener take CONNECT requests; at least one is needed.
	// MetaListener, if set, serves /metrics, /healthz and /readyz over
	// TLS with the agent-facing certificate; /metrics only to a client
	// certificate from MetricsCAFile or a bearer token allowed "get" on
	// /metrics (TokenReview and SubjectAccessReview).
	AgentListener, ProxyListener, UnixListener, MetaListener net.Listener
	MetricsCAFile                                            string

	AgentCertFile, AgentKeyFile, AgentCAFile string
	ProxyCertFile, ProxyKeyFile, ProxyCAFile string
	ProxyClientNames                         []string

	// TokenAllowedUsers/Groups turn on bearer-token requesters (TokenReview).
	TokenAllowedUsers, TokenAllowedGroups []string

	// DirectPrefixes: addresses no node claims that the server dials
	// itself (the cloud side's pod and Service networks; direct.go).
	DirectPrefixes []netip.Prefix

	DialTimeout     time.Duration
	MaxPendingDials int

	// Replicas: this replica's name, the replica count, and (without
	// AgentCertFile) the provisioned serving certificate.
	Replicas ReplicaOptions

	Log *logrus.Entry
	// Started, if set, receives the server once it serves and its caches
	// have synced.
	Started func(*Server)
}

// RunServer serves until ctx ends.
func RunServer(ctx context.Context, o ServerRunOptions) error {
	if o.AgentListener == nil || (o.ProxyListener == nil && o.UnixListener == nil) {
		return errors.New("tunnel server: an agent listener and a proxy or unix listener are required")
	}
	log := o.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	client, err := kubernetes.NewForConfig(o.Kube)
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := NewMetrics(reg)

	cfg := ServerConfig{Ports: NewPortPolicy(DefaultPorts()), ProxyClientNames: o.ProxyClientNames, DirectPrefixes: o.DirectPrefixes,
		DialTimeout: o.DialTimeout, MaxPendingDials: o.MaxPendingDials, Log: log, Metrics: metrics}
	replicasSynced, err := setupReplicas(ctx, client, o, log, &cfg)
	if err != nil {
		return err
	}
	if cfg.AgentCert == nil {
		if cfg.AgentCert, err = certs.NewKeyPair(o.AgentCertFile, o.AgentKeyFile); err != nil {
			return fmt.Errorf("agent-facing certificate: %w", err)
		}
	}
	if cfg.AgentCA, err = certs.NewCABundle(o.AgentCAFile); err != nil {
		return fmt.Errorf("agent CA: %w", err)
	}
	if o.ProxyListener != nil {
		cfg.ProxyCert = cfg.AgentCert
		if o.ProxyCertFile != "" {
			if cfg.ProxyCert, err = certs.NewKeyPair(o.ProxyCertFile, o.ProxyKeyFile); err != nil {
				return fmt.Errorf("proxy certificate: %w", err)
			}
		}
		if o.ProxyCAFile != "" {
			if cfg.ProxyCA, err = certs.NewCABundle(o.ProxyCAFile); err != nil {
				return fmt.Errorf("requester CA: %w", err)
			}
		}
	}
	if len(o.TokenAllowedUsers)+len(o.TokenAllowedGroups) > 0 {
		cfg.Tokens = &TokenReviewAuthenticator{Client: client, AllowedUsers: o.TokenAllowedUsers, AllowedGroups: o.TokenAllowedGroups}
	}
	nodes, err := NewNodeIndex(ctx, client, 10*time.Minute)
	if err != nil {
		return err
	}
	cfg.Nodes = nodes
	pc := &PortConfig{Policy: cfg.Ports, Log: log, Report: EventReporter(client, "edge-tunnel-server", log)}
	cmSynced, err := WatchPortConfig(ctx, client, pc)
	if err != nil {
		return err
	}
	srv, err := NewServer(cfg)
	if err != nil {
		return err
	}
	ready := func() bool { return srv.Ready() && nodes.HasSynced() && cmSynced() && replicasSynced() }

	errc := make(chan error, 4)
	var wg sync.WaitGroup
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	serve("agent listener", func() error { return srv.ServeAgents(o.AgentListener) })
	if o.ProxyListener != nil {
		serve("proxy listener", func() error { return srv.ServeProxy(o.ProxyListener) })
	}
	if o.UnixListener != nil {
		serve("unix listener", func() error { return srv.ServeProxy(o.UnixListener) })
	}
	var meta *http.Server
	if o.MetaListener != nil {
		auth := &certs.MetricsAuth{Client: client, Log: log.WithField("component", "metrics-auth")}
		if o.MetricsCAFile != "" {
			if auth.CA, err = certs.NewCABundle(o.MetricsCAFile); err != nil {
				return fmt.Errorf("metrics CA: %w", err)
			}
		}
		meta = &http.Server{Handler: metaHandler(reg, ready, auth), ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: certs.MetaTLSConfig(cfg.AgentCert, auth)}
		serve("meta listener", func() error {
			if err := meta.ServeTLS(o.MetaListener, "", ""); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	go func() {
		// Started waits for the caches: a replica that cannot yet map an
		// address to a node would answer 404 for real nodes.
		for !ready() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		log.Info("edge tunnel server ready")
		if o.Started != nil {
			o.Started(srv)
		}
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	if meta != nil {
		_ = meta.Close()
	}
	_ = srv.Close()
	wg.Wait()
	return runErr
}

// metaHandler serves /metrics to callers auth admits, and /healthz (the
// process runs) and /readyz (it serves and its caches are synced) to
// anyone: probes carry no credentials.
func metaHandler(reg *prometheus.Registry, ready func() bool, auth *certs.MetricsAuth) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", auth.Wrap(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

// AgentMetaHandler serves an agent's /metrics (to callers auth admits),
// /healthz and /readyz (ready: at least one server session). Serve it
// over TLS (certs.MetaTLSConfig) for client certificates to count.
func AgentMetaHandler(reg *prometheus.Registry, a *Agent, auth *certs.MetricsAuth) http.Handler {
	return metaHandler(reg, a.Connected, auth)
}
