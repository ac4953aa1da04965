package tunnel

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
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/vnode-project/vnode/internal/certs"
)

// The server's own serving certificate.
//
// Agents dial the replicas by whatever address reaches them: a load
// balancer's IP or host name, a ClusterIP over a leased line (seed 002
// switches x-tunnel-server-svc from LoadBalancer to ClusterIP), a Service
// name. The certificate must name that address, and it changes when the
// Service does. So each replica issues its own certificate, with the
// names and current addresses of its Services, and issues it again when
// they change (an informer per Service) or two thirds of its life has
// passed.
//
// The signing key is a CA of the tunnel's own, kept in a Secret only the
// server reads, rather than a CSR to the cluster CA: the cluster CA signs
// for a kubelet-serving or client signer with fixed identities and no
// approver here vouches for arbitrary SANs; a cluster-CA-signed
// certificate with names of the server's choosing would be trusted by
// everything that trusts the cluster CA (kubelets verifying the API
// server, for one). The tunnel CA vouches for the tunnel only. The first
// replica to find the Secret empty fills it (an update on its
// resourceVersion: of replicas starting together one wins, the others
// read its CA); its certificate goes to a ConfigMap that the agents'
// DaemonSet mounts, so agents trust it with no manual step. Both objects
// ship empty in manifests/tunnel, so the server needs get and update on
// those two names only, never create.
//
// The certificate and key are written to one file, 0600 in a 0700
// directory, replaced atomically; certs.KeyPair, the project's reload
// mechanism, picks the new one up at the next handshake.

// Keys of the CA Secret and ConfigMap.
const (
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"
)

// ServingCertConfig configures ProvisionServingCert.
type ServingCertConfig struct {
	Client    kubernetes.Interface
	Namespace string
	// Services whose names and addresses the certificate carries (their
	// ClusterIPs, external IPs and load balancer ingress IPs and names).
	Services      []string
	ClusterDomain string        // default cluster.local
	ExtraSANs     []string      // more names or addresses (a public DNS name of the load balancer)
	CASecret      string        // Secret of the tunnel CA (ca.crt, ca.key), filled on first use
	CAConfigMap   string        // ConfigMap publishing ca.crt to agents
	Dir           string        // where tls.pem is written
	Validity      time.Duration // default 30 days; renewed at two thirds
	Log           *logrus.Entry
}

// ServingCert keeps the serving certificate in Dir current.
type ServingCert struct {
	cfg      ServingCertConfig
	ca       *tunnelCA
	listers  []cache.Store
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	current  *x509.Certificate // only the worker touches it
	issued   chan struct{}     // closed after the first certificate
	issuedOK bool
}

// File is where the certificate and its key are.
func (s *ServingCert) File() string { return filepath.Join(s.cfg.Dir, "tls.pem") }

const servingKey = "serving-certificate"

// ProvisionServingCert sets up the tunnel CA, starts following the
// Services, and returns once a certificate is in place, as a KeyPair that
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
	var err error
	if s.ca, err = ensureTunnelCA(ctx, cfg.Client, cfg.Namespace, cfg.CASecret, cfg.Log); err != nil {
		return nil, err
	}
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

// reconcile issues a certificate if the current one lacks a name or
// address of the Services, carries one they no longer have, or is due for
// renewal; it returns when to look again at the latest.
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
	now := time.Now()
	if c := s.current; c != nil && sameSANs(c, dns, ips) && now.Before(renewAt(c)) {
		return time.Until(renewAt(c)), nil
	}
	if err := s.publishCA(ctx); err != nil {
		return 0, err
	}
	cert, pemBytes, err := s.ca.issue(dns, ips, now, s.cfg.Validity)
	if err != nil {
		return 0, err
	}
	if err := writeFileAtomic(s.File(), pemBytes); err != nil {
		return 0, fmt.Errorf("writing the serving certificate: %w", err)
	}
	s.current = cert
	s.cfg.Log.WithFields(logrus.Fields{"dns": dns, "ips": ips, "expires": cert.NotAfter.Format(time.RFC3339)}).Info("serving certificate issued")
	if !s.issuedOK {
		s.issuedOK = true
		close(s.issued)
	}
	return time.Until(renewAt(cert)), nil
}

// publishCA makes the CA ConfigMap hold the CA certificate.
func (s *ServingCert) publishCA(ctx context.Context) error {
	cms := s.cfg.Client.CoreV1().ConfigMaps(s.cfg.Namespace)
	cm, err := cms.Get(ctx, s.cfg.CAConfigMap, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s/%s (it ships in manifests/tunnel): %w", s.cfg.Namespace, s.cfg.CAConfigMap, err)
	}
	if cm.Data[CACertKey] == string(s.ca.certPEM) {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CACertKey] = string(s.ca.certPEM)
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

func sameSANs(c *x509.Certificate, dns []string, ips []net.IP) bool {
	if !slices.Equal(slices.Sorted(slices.Values(c.DNSNames)), dns) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// tunnelCA signs the replicas' serving certificates.
type tunnelCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// ensureTunnelCA reads the CA from Secret ns/name, or fills the empty
// Secret with a new one. Replicas racing to fill it settle on the one
// update that succeeds.
func ensureTunnelCA(ctx context.Context, client kubernetes.Interface, ns, name string, log *logrus.Entry) (*tunnelCA, error) {
	secrets := client.CoreV1().Secrets(ns)
	for attempt := 0; ; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading the tunnel CA Secret %s/%s (it ships, empty, in manifests/tunnel): %w", ns, name, err)
		}
		if len(sec.Data[CACertKey]) > 0 || len(sec.Data[CAKeyKey]) > 0 {
			ca, err := parseTunnelCA(sec.Data[CACertKey], sec.Data[CAKeyKey])
			if err != nil {
				return nil, fmt.Errorf("tunnel CA Secret %s/%s: %w", ns, name, err)
			}
			return ca, nil
		}
		certPEM, keyPEM, err := newTunnelCA(time.Now())
		if err != nil {
			return nil, err
		}
		sec = sec.DeepCopy()
		sec.Data = map[string][]byte{CACertKey: certPEM, CAKeyKey: keyPEM}
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		switch {
		case err == nil:
			log.WithField("secret", ns+"/"+name).Info("tunnel CA created")
			return parseTunnelCA(certPEM, keyPEM)
		case apierrors.IsConflict(err) && attempt < 5: // another replica filled it first: read its CA
			continue
		default:
			return nil, fmt.Errorf("storing the new tunnel CA in Secret %s/%s: %w", ns, name, err)
		}
	}
}

func newTunnelCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the tunnel CA key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "edge-tunnel-ca"},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the tunnel CA: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the tunnel CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func parseTunnelCA(certPEM, keyPEM []byte) (*tunnelCA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", CACertKey)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", CACertKey, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", CACertKey)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s holds no PEM key", CAKeyKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", CAKeyKey, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the ECDSA key of %s", CAKeyKey, CACertKey)
	}
	return &tunnelCA{cert: cert, key: key, certPEM: certPEM}, nil
}

// issue signs a serving certificate for dns and ips and returns it with
// the PEM of it and its key, in one block sequence as certs.KeyPair reads.
func (ca *tunnelCA) issue(dns []string, ips []net.IP, now time.Time, validity time.Duration) (*x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the serving key: %w", err)
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "edge-tunnel-server"},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter, DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...)
	return cert, out, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// writeFileAtomic writes data to path, 0600, by a rename: a reader sees
// the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tls-*.pem")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, nothing to remove
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
