// Package webhook runs eci-profile: the mutating admission webhook that
// applies the selectors of eciprofile/profile to new pods, their hot
// reload from informers, its serving certificate (eciprofile/servingcert),
// metrics and health endpoints.
package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/eciprofile/profile"
	"github.com/vnode-project/vnode/eciprofile/servingcert"
	"github.com/vnode-project/vnode/internal/certs"
)

// Component names eci-profile in events and its user agent.
const Component = "eci-profile"

// Defaults of cmd/eci-profile's flags.
const (
	DefaultNamespace     = "vnode-system"
	DefaultSecretName    = "eci-profile-tls"
	DefaultWebhookConfig = "eci-profile"
	// MutatePath is where the API server posts AdmissionReviews.
	MutatePath = "/mutate"
)

// SelectorGVR is the Selector resource.
var SelectorGVR = schema.GroupVersionResource{Group: profile.Group, Version: profile.Version, Resource: profile.Resource}

// Config is everything Run needs; cmd/eci-profile fills it from flags.
type Config struct {
	REST *rest.Config
	// Namespace is eci-profile's own: it holds the certificate Secret and
	// is, with kube-system, never mutated.
	Namespace     string
	SecretName    string
	WebhookConfig string
	// CertHosts are the DNS names and IPs of the serving certificate.
	CertHosts []string
	// CertSyncInterval re-reads the Secret and the caBundle (default 1m).
	CertSyncInterval time.Duration
	// CertValidity overrides the serving certificate's life (tests).
	CertValidity time.Duration
	// ConfigMapNamespace/Name locate the ConfigMap form (default
	// kube-system/eci-profile).
	ConfigMapNamespace, ConfigMapName string
	Resync                            time.Duration

	// WebhookListener serves MutatePath over TLS; MetricsListener /metrics
	// over TLS to authenticated callers; HealthListener /healthz and
	// /readyz (open, for probes). Metrics and health may be nil.
	WebhookListener net.Listener
	MetricsListener net.Listener
	HealthListener  net.Listener
	MetricsCert     *certs.KeyPair
	MetricsClientCA *certs.CABundle
	// ClientCA, if set, makes the webhook port require a client
	// certificate it signed: the one the API servers present to webhooks
	// (their AdmissionConfiguration's kubeconfig). Unset, the port answers
	// anyone who reaches it (with only the patch for the pod they send).
	ClientCA *certs.CABundle
	// Registry receives the metrics (default: a new one).
	Registry *prometheus.Registry

	Log logrus.FieldLogger
}

// Run serves the webhook until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.WebhookListener == nil {
		return errors.New("no webhook listener")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	log := cfg.Log
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&cfg.Namespace, DefaultNamespace)
	def(&cfg.SecretName, DefaultSecretName)
	def(&cfg.ConfigMapNamespace, profile.ConfigMapNamespace)
	def(&cfg.ConfigMapName, profile.ConfigMapName)
	if cfg.CertSyncInterval <= 0 {
		cfg.CertSyncInterval = time.Minute
	}
	restCfg := rest.CopyConfig(cfg.REST)
	restCfg.UserAgent = Component
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the dynamic client: %w", err)
	}

	certMgr := &servingcert.Manager{Client: client, Namespace: cfg.Namespace, SecretName: cfg.SecretName, Hosts: cfg.CertHosts,
		WebhookConfig: cfg.WebhookConfig, CertValidity: cfg.CertValidity, Log: log.WithField("component", "servingcert")}

	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var rl *reloader
	m := newMetrics(reg, func() float64 {
		if t := certMgr.NotAfter(); !t.IsZero() {
			return float64(t.Unix())
		}
		return 0
	}, func() float64 {
		if rl == nil {
			return 0
		}
		return float64(rl.count.Load())
	})

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	nsFactory := informers.NewSharedInformerFactory(client, cfg.Resync)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, cfg.Resync, informers.WithNamespace(cfg.ConfigMapNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.ConfigMapName).String()
		}))
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, cfg.Resync)
	nsInformer := nsFactory.Core().V1().Namespaces()
	cmInformer := cmFactory.Core().V1().ConfigMaps()
	selInformer := dynFactory.ForResource(SelectorGVR)
	rl = newReloader(cfg.ConfigMapNamespace, cfg.ConfigMapName, cmInformer.Lister(), selInformer.Lister(), recorder, m, log.WithField("component", "reload"))
	if _, err := cmInformer.Informer().AddEventHandler(rl.handlerFor(keyConfigMap)); err != nil {
		return fmt.Errorf("watching the ConfigMap: %w", err)
	}
	if _, err := selInformer.Informer().AddEventHandler(rl.handlerFor(keySelectors)); err != nil {
		return fmt.Errorf("watching Selectors: %w", err)
	}
	nsLister := nsInformer.Lister()
	synced := []cache.InformerSynced{nsInformer.Informer().HasSynced, cmInformer.Informer().HasSynced, selInformer.Informer().HasSynced}
	nsFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	dynFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	defer cmFactory.Shutdown()
	defer dynFactory.Shutdown()

	h := &handler{set: rl.Set, namespaces: nsLister, m: m, log: log.WithField("component", "admission"),
		getNamespace: func(ctx context.Context, name string) (*corev1.Namespace, error) {
			return client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		},
		excluded: map[string]bool{"kube-system": true, cfg.Namespace: true}}
	mux := http.NewServeMux()
	mux.Handle(MutatePath, h)
	ready := func() error {
		switch {
		case !certMgr.Loaded():
			return errors.New("no serving certificate yet")
		case !allSynced(synced):
			return errors.New("caches not synced")
		case !rl.Loaded():
			return errors.New("selectors not loaded yet")
		}
		return nil
	}
	health := http.NewServeMux()
	health.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	health.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	metricsPair := cfg.MetricsCert
	if metricsPair == nil && cfg.MetricsListener != nil {
		if metricsPair, err = certs.SelfSignedPair(Component); err != nil {
			return fmt.Errorf("making the metrics serving certificate: %w", err)
		}
	}
	auth := &certs.MetricsAuth{CA: cfg.MetricsClientCA, Client: client, Log: log.WithField("component", "metrics-auth")}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", auth.Wrap(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))

	// Health first: a liveness probe must answer while the certificate
	// is still being made.
	var servers []*http.Server
	serve := func(l net.Listener, handler http.Handler, tlsCfg *tls.Config, what string) {
		if l == nil {
			return
		}
		s := &http.Server{Handler: handler, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
		servers = append(servers, s)
		go func() {
			var err error
			if tlsCfg != nil {
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
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}()
	serve(cfg.HealthListener, health, nil, "health")
	if cfg.MetricsListener != nil {
		serve(cfg.MetricsListener, metricsMux, certs.MetaTLSConfig(metricsPair, auth), "metrics")
	}

	if err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := certMgr.Sync(ctx); err != nil {
			log.WithError(err).Warn("setting up the serving certificate; retrying")
			return false, nil
		}
		return true, nil
	}); err != nil {
		return nil //nolint:nilerr // ctx ended while waiting: a clean stop
	}
	go certMgr.Run(ctx, cfg.CertSyncInterval)
	// Serving before the caches sync answers "unchanged" at once rather
	// than leaving the API server waiting for its timeout.
	serve(cfg.WebhookListener, mux, webhookTLS(certMgr, cfg.ClientCA), "webhook")
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	go rl.run(ctx)
	<-ctx.Done()
	return nil
}

// webhookTLS serves the Secret's certificate and, with a client CA,
// demands a client certificate it signed (re-read on each handshake, so a
// rotated CA file applies without a restart).
func webhookTLS(certMgr *servingcert.Manager, clientCA *certs.CABundle) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certMgr.GetCertificate}
	if clientCA == nil {
		return base
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := clientCA.Pool()
		if err != nil {
			return nil, fmt.Errorf("reading the webhook client CA: %w", err)
		}
		c := base.Clone()
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
		return c, nil
	}}
}

func allSynced(synced []cache.InformerSynced) bool {
	for _, f := range synced {
		if !f() {
			return false
		}
	}
	return true
}
