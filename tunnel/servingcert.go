package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/vnode-project/vnode/eciprofile/servingcert"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/config"
)

// The server's own serving certificate.
//
// Agents dial the replicas by whatever address reaches them: a load
// balancer's IP or host name, a ClusterIP over a leased line (seed 002
// switches x-tunnel-server-svc from LoadBalancer to ClusterIP), a Service
// name. The certificate must name that address, and it changes when the
// Service does. So the replicas issue their own certificate, for the
// names and current addresses of their Services, and issue it again when
// they change (an informer per Service, a workqueue) or when it is due.
//
// The signing key is a CA of the tunnel's own, kept in a Secret only the
// server reads, rather than a CSR to the cluster CA: the cluster CA signs
// for kubelet-serving or client signers with fixed identities, and no
// approver here vouches for arbitrary SANs; a cluster-CA certificate with
// names of the server's choosing would be trusted by everything that
// trusts the cluster CA (kubelets verifying the API server, for one). The
// tunnel CA vouches for the tunnel only. The Secret is kept by
// servingcert.Manager, the project's one CA-in-a-Secret mechanism (also
// eci-profile's webhook): the CA and one serving certificate shared by
// the replicas, created and renewed with compare-and-swap updates so
// replicas never overwrite each other, the CA rotated with the old one
// kept in the bundle. The bundle goes to a ConfigMap that the agents'
// DaemonSet mounts, so agents trust it with no manual step. Both objects
// ship empty in manifests/tunnel, so the server needs get and update on
// those two names only, never create.
//
// The certificate and key are written to one file, 0600 in a 0700
// directory, replaced atomically; certs.KeyPair, the tunnel's reload
// mechanism, picks the new one up at the next handshake.

// CACertKey is the key of the CA bundle in the CA ConfigMap (and Secret).
const CACertKey = servingcert.KeyCACert

// ServingCertConfig configures ProvisionServingCert.
type ServingCertConfig struct {
	Client    kubernetes.Interface
	Namespace string
	// Services whose names and addresses the certificate carries (their
	// ClusterIPs, external IPs and load balancer ingress IPs and names).
	Services      []string
	ClusterDomain string        // default cluster.local
	ExtraSANs     []string      // more names or addresses (a public DNS name of the load balancer)
	CASecret      string        // Secret of the tunnel CA and the serving certificate, filled on first use
	CAConfigMap   string        // ConfigMap publishing the CA bundle (ca.crt) to agents
	Dir           string        // where tls.pem is written
	Validity      time.Duration // default 30 days; renewed at two thirds
	Log           *logrus.Entry
}

// ServingCert keeps the serving certificate in Dir current.
type ServingCert struct {
	cfg      ServingCertConfig
	mgr      *servingcert.Manager // only the worker calls it
	listers  []cache.Store
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	written  []byte        // DER of the certificate in File
	issued   chan struct{} // closed after the first certificate
	issuedOK bool
}

// File is where the certificate and its key are.
func (s *ServingCert) File() string { return filepath.Join(s.cfg.Dir, "tls.pem") }

const servingKey = "serving-certificate"

// ProvisionServingCert starts following the Services, keeps the tunnel CA
// and serving certificate in the CA Secret, and returns once a certificate is in place, as a KeyPair that
// reloads every re-issued one. It keeps the certificate current until ctx
// ends.
func ProvisionServingCert(ctx context.Context, cfg ServingCertConfig) (*certs.KeyPair, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.CASecret == "" || cfg.CAConfigMap == "" || cfg.Dir == "" {
		return nil, errors.New("serving certificate: a client, namespace, CA Secret, CA ConfigMap and directory are required")
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.Validity <= 0 {
		cfg.Validity = 30 * 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	cfg.Log = cfg.Log.WithField("component", "serving-certificate")
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("serving certificate directory: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("serving certificate directory: %w", err)
	}
	s := &ServingCert{cfg: cfg, issued: make(chan struct{}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "serving-certificate"})}
	s.mgr = &servingcert.Manager{Client: cfg.Client, Namespace: cfg.Namespace, SecretName: cfg.CASecret,
		Name: "edge-tunnel-server", CertValidity: cfg.Validity, Log: cfg.Log}
	for _, name := range cfg.Services {
		f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 10*time.Minute, informers.WithNamespace(cfg.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}))
		inf := f.Core().V1().Services().Informer()
		enqueue := func(any) { s.queue.Add(servingKey) }
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
		}); err != nil {
			return nil, fmt.Errorf("watching Service %s/%s: %w", cfg.Namespace, name, err)
		}
		s.listers = append(s.listers, inf.GetStore())
		s.synced = append(s.synced, inf.HasSynced)
		f.Start(ctx.Done())
	}
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return nil, fmt.Errorf("serving certificate: Services not listed: %w", ctx.Err())
	}
	s.queue.Add(servingKey)
	go wait.UntilWithContext(ctx, func(context.Context) {
		for s.processNext(ctx) {
		}
	}, time.Second)
	select {
	case <-s.issued:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return certs.NewKeyPair(s.File(), "")
}

func (s *ServingCert) processNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	next, err := s.reconcile(ctx)
	if err != nil {
		s.cfg.Log.WithError(err).Warn("keeping the serving certificate current (retrying)")
		s.queue.AddRateLimited(key)
		return true
	}
	s.queue.Forget(key)
	s.queue.AddAfter(key, next)
	return true
}

// reconcile has the Secret's certificate cover every name and address of
// the Services (servingcert.Manager renews it when one is missing or it
// is due, or loads another replica's renewal), writes it to File if it
// changed, and publishes the CA bundle; it returns when to look again.
func (s *ServingCert) reconcile(ctx context.Context) (time.Duration, error) {
	var svcs []*corev1.Service
	for _, l := range s.listers {
		for _, o := range l.List() {
			if svc, ok := o.(*corev1.Service); ok {
				svcs = append(svcs, svc)
			}
		}
	}
	dns, ips := servingSANs(s.cfg.Namespace, s.cfg.ClusterDomain, s.cfg.Services, svcs, s.cfg.ExtraSANs)
	hosts := slices.Clone(dns)
	for _, ip := range ips {
		hosts = append(hosts, ip.String())
	}
	s.mgr.Hosts = hosts
	if err := s.mgr.Sync(ctx); err != nil {
		return 0, fmt.Errorf("tunnel CA Secret %s/%s (it ships, empty, in manifests/tunnel): %w", s.cfg.Namespace, s.cfg.CASecret, err)
	}
	if err := s.publishCA(ctx, s.mgr.CABundle()); err != nil {
		return 0, err
	}
	cert, err := s.mgr.GetCertificate(nil)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(cert.Certificate[0], s.written) {
		data, err := keyPairPEM(cert)
		if err != nil {
			return 0, err
		}
		if err := config.WriteSecretFile(s.File(), data); err != nil {
			return 0, fmt.Errorf("writing the serving certificate: %w", err)
		}
		s.written = cert.Certificate[0]
		s.cfg.Log.WithFields(logrus.Fields{"dns": cert.Leaf.DNSNames, "ips": cert.Leaf.IPAddresses,
			"expires": cert.Leaf.NotAfter.Format(time.RFC3339)}).Info("serving certificate in place")
	}
	if !s.issuedOK {
		s.issuedOK = true
		close(s.issued)
	}
	// Look again when it is due (and hourly: a CA another replica rotated
	// is published by every replica).
	return min(max(time.Until(renewAt(cert.Leaf)), time.Second), time.Hour), nil
}

// keyPairPEM is cert's chain and key in one PEM file, as certs.KeyPair reads.
func keyPairPEM(cert *tls.Certificate) ([]byte, error) {
	var out []byte
	for _, der := range cert.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the serving key: %w", err)
	}
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), nil
}

// publishCA makes the CA ConfigMap hold bundle.
func (s *ServingCert) publishCA(ctx context.Context, bundle []byte) error {
	cms := s.cfg.Client.CoreV1().ConfigMaps(s.cfg.Namespace)
	cm, err := cms.Get(ctx, s.cfg.CAConfigMap, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s/%s (it ships in manifests/tunnel): %w", s.cfg.Namespace, s.cfg.CAConfigMap, err)
	}
	if cm.Data[CACertKey] == string(bundle) {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CACertKey] = string(bundle)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("publishing the tunnel CA in ConfigMap %s/%s: %w", s.cfg.Namespace, s.cfg.CAConfigMap, err)
	}
	s.cfg.Log.WithField("configmap", s.cfg.Namespace+"/"+s.cfg.CAConfigMap).Info("tunnel CA published for agents")
	return nil
}

// renewAt is two thirds into c's life.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// servingSANs are the names and addresses of the Services: each
// configured name in its short and qualified forms (whether or not the
// Service exists yet), and the addresses of those that exist.
func servingSANs(ns, domain string, names []string, svcs []*corev1.Service, extra []string) ([]string, []net.IP) {
	var dns []string
	var ips []net.IP
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" || s == corev1.ClusterIPNone {
			return
		}
		if ip := net.ParseIP(s); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			return
		}
		if !slices.Contains(dns, s) {
			dns = append(dns, s)
		}
	}
	for _, n := range names {
		for _, s := range []string{n, n + "." + ns, n + "." + ns + ".svc", n + "." + ns + ".svc." + domain} {
			add(s)
		}
	}
	for _, svc := range svcs {
		for _, ip := range svc.Spec.ClusterIPs {
			add(ip)
		}
		add(svc.Spec.ClusterIP)
		for _, ip := range svc.Spec.ExternalIPs {
			add(ip)
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			add(in.IP)
			add(in.Hostname)
		}
	}
	for _, s := range extra {
		add(s)
	}
	slices.Sort(dns)
	slices.SortFunc(ips, func(a, b net.IP) int { return bytes.Compare(a.To16(), b.To16()) })
	return dns, ips
}
