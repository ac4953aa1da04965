package bootstrap

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate"

	"github.com/vnode-project/vnode/internal/identity"
)

// servingPairName names the serving pair in the cert dir
// (vnode-server-current.pem), next to the client's vnode-client-*.pem.
const servingPairName = "vnode-server"

// ServingSignerName signs kubelet serving certificates.
const ServingSignerName = certificatesv1.KubeletServingSignerName

// ServingConfig says what a virtual node's kubelet API certificate names
// and who asks for it.
type ServingConfig struct {
	NodeName string
	// IPs and DNSNames are the addresses the node registers on its Node
	// (status.addresses); the certificate names them and the node name,
	// the only names vnode-approver accepts.
	IPs      []net.IP
	DNSNames []string
	// CertDir keeps the pair (created 0700, the pair 0600).
	CertDir string
	// Client authenticates the CSRs as the node (system:vnode:<node>); a
	// rotating client certificate is picked up (Client.RESTConfig).
	Client *rest.Config
	// Lifetime requests expirationSeconds on the CSR (0: the signer's).
	Lifetime time.Duration
	Log      logrus.FieldLogger
	// OnRotation, if set, is told of the first certificate and each
	// renewal (e.g. to record an event on the Node).
	OnRotation func(cert *x509.Certificate, renewed bool)
}

// Serving is a virtual node's kubelet-serving certificate, requested the
// way a kubelet with --rotate-server-certificates does: client-go's
// certificate manager sends a kubernetes.io/kubelet-serving CSR (CN
// system:node:<node>, O system:nodes), waits for approval and signing,
// stores the pair and renews it before it expires. A stored valid pair is
// served at once after a restart.
type Serving struct {
	manager    certificate.Manager
	log        logrus.FieldLogger
	onRotation func(*x509.Certificate, bool)
	stop       chan struct{}
	once       sync.Once
}

// NewServing loads a stored pair, if any; Start begins requesting.
func NewServing(cfg ServingConfig) (*Serving, error) {
	if cfg.NodeName == "" || cfg.CertDir == "" || cfg.Client == nil {
		return nil, errors.New("bootstrap: the serving certificate needs NodeName, CertDir and Client")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	client, err := kubernetes.NewForConfig(cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("creating the client for serving CSRs: %w", err)
	}
	var lifetime *time.Duration
	if cfg.Lifetime > 0 {
		lifetime = &cfg.Lifetime
	}
	s := &Serving{log: cfg.Log.WithFields(logrus.Fields{"node": cfg.NodeName, "signer": ServingSignerName}), onRotation: cfg.OnRotation, stop: make(chan struct{})}
	s.manager, _, err = newManager(cfg.CertDir, &certificate.Config{
		Name:        servingPairName,
		ClientsetFn: func(*tls.Certificate) (kubernetes.Interface, error) { return client, nil },
		Template:    ServingTemplate(cfg.NodeName, cfg.IPs, cfg.DNSNames),
		SignerName:  ServingSignerName,
		// The manager's keys are ECDSA: no key encipherment.
		Usages:                       []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		RequestedCertificateLifetime: lifetime,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// ServingTemplate is the request of node's serving certificate: the
// kubelet's subject and the node's name and registered addresses.
func ServingTemplate(node string, ips []net.IP, dnsNames []string) *x509.CertificateRequest {
	dns := []string{node}
	for _, d := range dnsNames {
		if d != node {
			dns = append(dns, d)
		}
	}
	return &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: identity.NodeUserPrefix + node, Organization: []string{identity.NodesGroup}},
		DNSNames:    dns,
		IPAddresses: ips,
	}
}

// PendingMessage says why the kubelet API refuses handshakes before its
// first certificate.
const PendingMessage = "the kubelet API has no serving certificate yet: it refuses TLS handshakes until its kubernetes.io/kubelet-serving CSR is approved (by vnode-approver) and signed"

// Start requests a certificate when none valid is stored and keeps
// renewing it until Stop; it reports whether one is already there. Call it
// once the Node is registered: the approver checks the certificate's
// addresses against the Node's.
func (s *Serving) Start() bool {
	ready := s.manager.Current() != nil
	if !ready {
		s.log.Warn(PendingMessage)
	}
	s.manager.Start()
	go s.logChanges()
	return ready
}

// Stop ends rotation.
func (s *Serving) Stop() {
	s.once.Do(func() {
		close(s.stop)
		s.manager.Stop()
	})
}

// logChanges says when the kubelet API gets its first certificate and
// each renewal (the manager logs its CSRs through klog).
func (s *Serving) logChanges() {
	onRotation(s.stop, s.leaf, func(cur, last *x509.Certificate) {
		msg := "kubelet API serving certificate ready"
		if last != nil {
			msg = "kubelet API serving certificate renewed"
		}
		s.log.WithField("notAfter", cur.NotAfter).Info(msg)
		if s.onRotation != nil {
			s.onRotation(cur, last != nil)
		}
	})
}

func (s *Serving) leaf() *x509.Certificate {
	if cur := s.manager.Current(); cur != nil {
		return cur.Leaf
	}
	return nil
}

// ErrNoServingCertificate is what a TLS handshake fails with before the
// first serving certificate is signed.
var ErrNoServingCertificate = errors.New("no serving certificate yet: the kubelet-serving CSR is not approved and signed")

// GetCertificate serves the current pair (tls.Config.GetCertificate), so a
// renewal takes effect on the next handshake.
func (s *Serving) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cur := s.manager.Current(); cur != nil {
		return cur, nil
	}
	return nil, ErrNoServingCertificate
}
