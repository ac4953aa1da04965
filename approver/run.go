package approver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/internal/certs"
)

// Component is the name in events, the Lease and the user agent.
const Component = "vnode-approver"

// The API client's default budget (cmd/vnode-approver's --kube-api-qps and
// --kube-api-burst). The approver's requests follow the CSRs: at most one
// approval write and one event per CSR, a SubjectAccessReview per
// requestor identity and cache TTL, and a Secret list only when a token is
// not in the cache yet; ignored CSRs cost nothing and failures retry with
// per-CSR backoff. So the client limit only adds a queue behind a burst of
// CSRs the API server has already admitted (API Priority and Fairness
// guards the server); 50/100 made a burst of 1,000 wait about 20 s for it.
// The burst covers a 1,000-node bootstrap; 200/s is the sustained cap.
const (
	DefaultKubeAPIQPS   = 200
	DefaultKubeAPIBurst = 1000
)

// Config is everything Run needs; cmd/vnode-approver fills it from flags.
type Config struct {
	// REST reaches the API server as the approver's identity.
	REST    *rest.Config
	Options Options
	// Resync re-lists the caches; pending CSRs are re-decided each time.
	Resync time.Duration

	LeaderElect    bool
	LeaseNamespace string
	LeaseName      string
	// Identity in the Lease; default hostname_random.
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	// MetricsListener serves /metrics over TLS to callers with a client
	// certificate from MetricsClientCA or a bearer token allowed to get
	// /metrics (TokenReview + SubjectAccessReview); HealthListener serves
	// /healthz and /readyz (open, for probes). Either may be nil.
	MetricsListener net.Listener
	HealthListener  net.Listener
	// MetricsCert serves /metrics; nil: a self-signed certificate.
	MetricsCert *certs.KeyPair
	// MetricsClientCA, if set, admits client certificates it signed.
	MetricsClientCA *certs.CABundle

	Log logrus.FieldLogger
}

// Run runs the approver until ctx ends or leadership is lost.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	log := cfg.Log
	restCfg := rest.CopyConfig(cfg.REST)
	restCfg.UserAgent = Component
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating API client: %w", err)
	}
	metaClient, err := metadata.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating metadata client: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := cfg.Options
	opts.Registry = reg
	opts.Log = log

	// Not shut down with ctx: releasing the Lease after ctx ends records a
	// "stopped leading" event, which a stopped broadcaster refuses with an
	// error. The deferred Shutdown runs after the release.
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	defer broadcaster.Shutdown()
	// Events get a client of their own: with the approvals' client, one
	// event per decision would halve the approval rate.
	eventClient, err := kubernetes.NewForConfig(rest.CopyConfig(restCfg))
	if err != nil {
		return fmt.Errorf("creating the events client: %w", err)
	}
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	opts.Recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	csrFactory := informers.NewSharedInformerFactoryWithOptions(client, cfg.Resync, informers.WithTweakListOptions(ListOptions))
	tokenFactory := informers.NewSharedInformerFactoryWithOptions(client, cfg.Resync,
		informers.WithNamespace(tokenSecretNamespace), informers.WithTweakListOptions(TokenListOptions))
	// Only node labels matter: metadata keeps the cache small.
	metaFactory := metadatainformer.NewSharedInformerFactory(metaClient, cfg.Resync)
	nodes := metaFactory.ForResource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}).Informer()

	ctrl, err := NewController(client, csrFactory.Certificates().V1().CertificateSigningRequests(),
		tokenFactory.Core().V1().Secrets(), nodes, opts)
	if err != nil {
		return err
	}

	var leading atomic.Bool
	var elector *leaderelection.LeaderElector
	healthz := leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	ready := func() error {
		// A standby is ready: it is healthy and waiting for the Lease.
		if cfg.LeaderElect && !leading.Load() {
			return nil
		}
		if !ctrl.Synced() {
			return errors.New("caches not synced")
		}
		return nil
	}
	metricsTLS, metricsAuth, err := secureMetrics(cfg, client, log)
	if err != nil {
		return err
	}
	servers := serve(ctx, log, cfg.HealthListener, healthMux(healthz, ready), cfg.MetricsListener,
		metricsAuth.Wrap(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})), metricsTLS)
	defer servers()

	runController := func(ctx context.Context) error {
		csrFactory.Start(ctx.Done())
		tokenFactory.Start(ctx.Done())
		metaFactory.Start(ctx.Done())
		defer csrFactory.Shutdown()
		defer tokenFactory.Shutdown()
		defer metaFactory.Shutdown()
		return ctrl.Run(ctx)
	}
	if !cfg.LeaderElect {
		return runController(ctx)
	}

	id := cfg.Identity
	if id == "" {
		if id, err = leaderIdentity(); err != nil {
			return err
		}
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.LeaseNamespace, cfg.LeaseName,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id, EventRecorder: opts.Recorder})
	if err != nil {
		return fmt.Errorf("creating the Lease lock %s/%s: %w", cfg.LeaseNamespace, cfg.LeaseName, err)
	}
	runErr := make(chan error, 1)
	lost := errors.New("lost the leader Lease")
	leCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	elector, err = leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   orDefault(cfg.LeaseDuration, 15*time.Second),
		RenewDeadline:   orDefault(cfg.RenewDeadline, 10*time.Second),
		RetryPeriod:     orDefault(cfg.RetryPeriod, 2*time.Second),
		ReleaseOnCancel: true,
		Name:            Component,
		WatchDog:        healthz,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				leading.Store(true)
				log.WithField("identity", id).Info("leading; starting the approver")
				err := runController(ctx)
				runErr <- err
				cancel()
			},
			OnStoppedLeading: func() {
				leading.Store(false)
				log.WithField("identity", id).Info("stopped leading")
			},
		},
	})
	if err != nil {
		return fmt.Errorf("configuring leader election: %w", err)
	}
	elector.Run(leCtx)
	select {
	case err := <-runErr:
		if err != nil {
			return err
		}
	default:
	}
	if ctx.Err() != nil {
		return nil
	}
	// Leadership ended while ctx is live: exit so a restart rejoins the
	// election rather than running two approvers.
	return lost
}

func healthMux(healthz *leaderelection.HealthzAdaptor, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthz.Check(r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

// serve starts the HTTP servers on their listeners; the returned function
// stops them.
func serve(ctx context.Context, log logrus.FieldLogger, healthL net.Listener, health http.Handler, metricsL net.Listener, metrics http.Handler, metricsTLS *tls.Config) func() {
	var servers []*http.Server
	start := func(l net.Listener, h http.Handler, what string) {
		if l == nil {
			return
		}
		mux := h
		if what == "metrics" {
			m := http.NewServeMux()
			m.Handle("/metrics", h)
			mux = m
		}
		s := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() {
			var err error
			if what == "metrics" {
				s.TLSConfig = metricsTLS
				err = s.ServeTLS(l, "", "")
			} else {
				err = s.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.WithError(err).WithField("server", what).Error("HTTP server ended")
			}
		}()
		log.WithFields(logrus.Fields{"server": what, "address": l.Addr().String()}).Info("serving")
	}
	start(healthL, health, "health")
	start(metricsL, metrics, "metrics")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}
}

// secureMetrics is the TLS configuration and guard of /metrics: the
// metrics name every requestor and node that asked for a certificate.
func secureMetrics(cfg Config, client kubernetes.Interface, log logrus.FieldLogger) (*tls.Config, *certs.MetricsAuth, error) {
	pair := cfg.MetricsCert
	if pair == nil {
		var err error
		if pair, err = certs.SelfSignedPair(Component); err != nil {
			return nil, nil, fmt.Errorf("making the metrics serving certificate: %w", err)
		}
	}
	auth := &certs.MetricsAuth{CA: cfg.MetricsClientCA, Client: client, Log: log.WithField("component", "metrics-auth")}
	return certs.MetaTLSConfig(pair, auth), auth, nil
}

func leaderIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("reading hostname for the leader identity: %w", err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating the leader identity: %w", err)
	}
	return host + "_" + hex.EncodeToString(b), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
