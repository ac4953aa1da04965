// Package servingcert keeps eci-profile's webhook serving certificate and
// its CA in one Secret: the first replica creates it, every replica reads
// it, and whichever replica notices the certificate is due renews it with
// an optimistic-concurrency update, so replicas never overwrite each
// other's CA. It also keeps the MutatingWebhookConfiguration's caBundle
// equal to the Secret's CA bundle.
package servingcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Keys of the Secret. ca.crt may hold two CAs while the CA rotates.
const (
	KeyCACert = "ca.crt"
	KeyCAKey  = "ca.key"
	KeyCert   = corev1.TLSCertKey
	KeyKey    = corev1.TLSPrivateKeyKey
)

// Manager owns the serving certificate.
type Manager struct {
	Client     kubernetes.Interface
	Namespace  string
	SecretName string
	// Hosts are the DNS names and IP addresses the certificate covers.
	Hosts []string
	// Name is the certificate's CommonName, and its CA's with "-ca@<time>"
	// (default "eci-profile"; edge-tunnel-server uses this manager too).
	Name string
	// WebhookConfig is the MutatingWebhookConfiguration whose webhooks get
	// the caBundle; "" leaves it alone.
	WebhookConfig string
	// CertValidity and CAValidity default to a year and ten years. A
	// certificate is renewed when less than a third of its life is left.
	CertValidity time.Duration
	CAValidity   time.Duration
	Log          logrus.FieldLogger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	current  atomic.Pointer[tls.Certificate]
	caBundle atomic.Pointer[[]byte]
}

func (m *Manager) name() string {
	if m.Name != "" {
		return m.Name
	}
	return "eci-profile"
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// GetCertificate serves the certificate last loaded by Sync.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.current.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return c, nil
}

// Loaded reports whether a certificate is being served.
func (m *Manager) Loaded() bool { return m.current.Load() != nil }

// CABundle is the CA bundle last loaded.
func (m *Manager) CABundle() []byte {
	if b := m.caBundle.Load(); b != nil {
		return *b
	}
	return nil
}

// NotAfter is the served certificate's expiry (zero before Sync).
func (m *Manager) NotAfter() time.Time {
	if c := m.current.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// Run syncs now and then every interval until ctx ends.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Sync(ctx); err != nil {
				m.Log.WithError(err).Warn("syncing the serving certificate; retrying")
			}
		}
	}
}

// Sync makes sure the Secret holds a current certificate (creating or
// renewing it), serves it, and writes its CA bundle into the webhook
// configuration.
func (m *Manager) Sync(ctx context.Context) error {
	sec, err := m.ensureSecret(ctx)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(sec.Data[KeyCert], sec.Data[KeyKey])
	if err != nil {
		return fmt.Errorf("loading the certificate of Secret %s/%s: %w", m.Namespace, m.SecretName, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("parsing the certificate of Secret %s/%s: %w", m.Namespace, m.SecretName, err)
		}
	}
	if old := m.current.Load(); old == nil || !bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		m.Log.WithFields(logrus.Fields{"notAfter": cert.Leaf.NotAfter, "serial": cert.Leaf.SerialNumber.String()}).Info("serving certificate loaded")
	}
	m.current.Store(&cert)
	bundle := bytes.Clone(sec.Data[KeyCACert])
	m.caBundle.Store(&bundle)
	return m.syncCABundle(ctx, bundle)
}

func (m *Manager) ensureSecret(ctx context.Context) (*corev1.Secret, error) {
	secrets := m.Client.CoreV1().Secrets(m.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		sec, err := secrets.Get(ctx, m.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			data, err := m.issue(nil)
			if err != nil {
				return nil, err
			}
			sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: m.SecretName, Namespace: m.Namespace,
				Labels: map[string]string{"app.kubernetes.io/name": m.name()}}, Type: corev1.SecretTypeTLS, Data: data}
			created, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // another replica was first: read its Secret
			}
			if err != nil {
				return nil, fmt.Errorf("creating Secret %s/%s: %w", m.Namespace, m.SecretName, err)
			}
			m.Log.WithField("secret", m.Namespace+"/"+m.SecretName).Info("created the webhook CA and serving certificate")
			return created, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", m.Namespace, m.SecretName, err)
		}
		why := m.renewalReason(sec.Data)
		if why == "" {
			return sec, nil
		}
		data, err := m.issue(sec.Data)
		if err != nil {
			return nil, err
		}
		sec = sec.DeepCopy()
		sec.Data = data
		// resourceVersion makes this a compare-and-swap: if another replica
		// renewed first, the update conflicts and we read its result.
		updated, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("renewing Secret %s/%s: %w", m.Namespace, m.SecretName, err)
		}
		m.Log.WithFields(logrus.Fields{"secret": m.Namespace + "/" + m.SecretName, "reason": why}).Info("renewed the webhook serving certificate")
		return updated, nil
	}
	return nil, fmt.Errorf("Secret %s/%s kept changing under us", m.Namespace, m.SecretName)
}

func (m *Manager) certValidity() time.Duration {
	if m.CertValidity > 0 {
		return m.CertValidity
	}
	return 365 * 24 * time.Hour
}

func (m *Manager) caValidity() time.Duration {
	if m.CAValidity > 0 {
		return m.CAValidity
	}
	return 10 * 365 * 24 * time.Hour
}

// due reports whether less than a third of c's life is left.
func (m *Manager) due(c *x509.Certificate) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return m.now().After(c.NotAfter.Add(-life / 3))
}

// renewalReason says why the Secret's certificate needs renewing, or "".
func (m *Manager) renewalReason(data map[string][]byte) string {
	ca, _, err := parseCA(data)
	if err != nil {
		return "the CA is unreadable: " + err.Error()
	}
	pair, err := tls.X509KeyPair(data[KeyCert], data[KeyKey])
	if err != nil {
		return "the certificate is unreadable: " + err.Error()
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return "the certificate is unreadable: " + err.Error()
	}
	if m.due(ca) {
		return "the CA expires soon"
	}
	if m.due(leaf) {
		return "the certificate expires soon"
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return "the certificate is not signed by the CA"
	}
	for _, h := range m.Hosts {
		if leaf.VerifyHostname(h) != nil {
			return "the certificate does not cover " + h
		}
	}
	return ""
}

// parseCA returns the newest CA (the first in ca.crt) and its key.
func parseCA(data map[string][]byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data[KeyCACert])
	if block == nil {
		return nil, nil, errors.New("no PEM certificate in " + KeyCACert)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	kb, _ := pem.Decode(data[KeyCAKey])
	if kb == nil {
		return nil, nil, errors.New("no PEM key in " + KeyCAKey)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// issue makes the Secret's new data from its old data (nil: none). The CA
// is kept while it is good; a renewed CA is put first in ca.crt with the
// old one after it, so replicas still serving a certificate from the old
// CA stay trusted until they reload.
func (m *Manager) issue(old map[string][]byte) (map[string][]byte, error) {
	now := m.now()
	ca, caKey, err := parseCA(old)
	bundle := []byte(nil)
	if err != nil || m.due(ca) {
		if err == nil && now.Before(ca.NotAfter) {
			bundle = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
		}
		if ca, caKey, err = newCA(m.name(), now, m.caValidity()); err != nil {
			return nil, err
		}
	} else {
		bundle = bytes.Clone(old[KeyCACert])
		if i := bytes.Index(bundle[1:], []byte("-----BEGIN")); i >= 0 {
			bundle = bundle[i+1:] // drop the CA being kept: it is prepended below
		} else {
			bundle = nil
		}
	}
	bundle = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), bundle...)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the serving key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: m.name()},
		NotBefore: now.Add(-time.Minute), NotAfter: minTime(now.Add(m.certValidity()), ca.NotAfter),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range m.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the serving key: %w", err)
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the CA key: %w", err)
	}
	return map[string][]byte{
		KeyCACert: bundle,
		KeyCAKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		KeyCert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyKey:    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func newCA(name string, now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the CA key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name + "-ca@" + now.UTC().Format(time.RFC3339)},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(validity), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signing the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new CA: %w", err)
	}
	return ca, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// syncCABundle writes bundle into every webhook of the configuration that
// has a different one. Replicas all write the Secret's bundle, so they
// agree; a conflict with another replica's write is retried on a fresh
// read (which then usually has nothing left to change).
func (m *Manager) syncCABundle(ctx context.Context, bundle []byte) error {
	if m.WebhookConfig == "" {
		return nil
	}
	api := m.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	updated := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg, err := api.Get(ctx, m.WebhookConfig, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		for i := range cfg.Webhooks {
			if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
				cfg.Webhooks[i].ClientConfig.CABundle = slices.Clone(bundle)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = api.Update(ctx, cfg, metav1.UpdateOptions{})
		updated = err == nil
		return err
	})
	if err != nil {
		return fmt.Errorf("updating the caBundle of MutatingWebhookConfiguration %s: %w", m.WebhookConfig, err)
	}
	if updated {
		m.Log.WithField("webhookConfiguration", m.WebhookConfig).Info("caBundle updated")
	}
	return nil
}
