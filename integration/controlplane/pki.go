package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is the control plane's certificate authority. One CA signs the serving
// certificates, every client certificate and, through kube-controller-manager,
// approved CSRs, so a single ca.crt lets any client verify any component.
type PKI struct {
	Dir        string
	CACert     *x509.Certificate
	CAKey      crypto.Signer
	CACertPath string
	CAKeyPath  string
}

// CertPair is a certificate and key written to disk (PEM, key mode 0600).
type CertPair struct {
	CertPath string
	KeyPath  string
	CertPEM  []byte
	KeyPEM   []byte
}

// NewCA creates a self-signed CA in dir whose files are named name.crt and
// name.key: for tests that need a second, untrusted authority.
func NewCA(dir, name string) (*PKI, error) { return newPKI(dir, name) }

func newPKI(dir, name string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating PKI directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "vnode-" + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	p := &PKI{Dir: dir, CACert: cert, CAKey: key}
	pair, err := p.write(name, der, key)
	if err != nil {
		return nil, err
	}
	p.CACertPath, p.CAKeyPath = pair.CertPath, pair.KeyPath
	return p, nil
}

// CAPEM returns the CA certificate in PEM form.
func (p *PKI) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CACert.Raw})
}

// ClientCert issues a client certificate for user in groups (O), written as
// <name>.crt/.key in the PKI directory.
func (p *PKI) ClientCert(name, user string, groups ...string) (*CertPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for %s: %w", user, err)
	}
	tmpl := p.leafTemplate(pkix.Name{CommonName: user, Organization: groups})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CACert, &key.PublicKey, p.CAKey)
	if err != nil {
		return nil, fmt.Errorf("signing client certificate for %s: %w", user, err)
	}
	return p.write(name, der, key)
}

// ServingCert issues a TLS serving certificate for the given DNS names and IPs.
func (p *PKI) ServingCert(name string, dnsNames []string, ips []net.IP) (*CertPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating serving key for %s: %w", name, err)
	}
	tmpl := p.leafTemplate(pkix.Name{CommonName: name})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	tmpl.DNSNames = dnsNames
	tmpl.IPAddresses = ips
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CACert, &key.PublicKey, p.CAKey)
	if err != nil {
		return nil, fmt.Errorf("signing serving certificate for %s: %w", name, err)
	}
	return p.write(name, der, key)
}

func (p *PKI) leafTemplate(subject pkix.Name) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// serviceAccountKey writes the RSA key pair the API server signs and verifies
// service-account tokens with.
func (p *PKI) serviceAccountKey() (pub, priv string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", fmt.Errorf("generating service-account key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encoding service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("encoding service-account public key: %w", err)
	}
	priv = filepath.Join(p.Dir, "sa.key")
	pub = filepath.Join(p.Dir, "sa.pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return "", "", fmt.Errorf("writing service-account key: %w", err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return "", "", fmt.Errorf("writing service-account public key: %w", err)
	}
	return pub, priv, nil
}

func (p *PKI) write(name string, der []byte, key crypto.Signer) (*CertPair, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key %s: %w", name, err)
	}
	pair := &CertPair{
		CertPath: filepath.Join(p.Dir, name+".crt"),
		KeyPath:  filepath.Join(p.Dir, name+".key"),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if err := os.WriteFile(pair.CertPath, pair.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("writing certificate %s: %w", name, err)
	}
	if err := os.WriteFile(pair.KeyPath, pair.KeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing key %s: %w", name, err)
	}
	return pair, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand never fails on Linux; a fixed serial would only break
		// revocation, which this test CA does not do.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
