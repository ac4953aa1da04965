package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pki is a throwaway CA and the certificates both tunnels use: ECDSA
// P-256 for everyone, SAN 127.0.0.1 and localhost, client and server use.
type pki struct {
	dir    string
	caFile string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newPKI(tb testing.TB) *pki {
	tb.Helper()
	p := &pki{dir: tb.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.key = key
	p.caFile = filepath.Join(p.dir, "ca.crt")
	p.write(tb, p.caFile, "CERTIFICATE", der)
	return p
}

func (p *pki) write(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// issue returns the certificate and key files for cn (organizations orgs).
func (p *pki) issue(tb testing.TB, cn string, orgs ...string) (string, string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial + 1), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	base := filepath.Join(p.dir, cn)
	for i := 0; ; i++ {
		if _, err := os.Stat(base + ".crt"); err != nil {
			break
		}
		base = filepath.Join(p.dir, cn+"-"+big.NewInt(int64(i)).String())
	}
	p.write(tb, base+".crt", "CERTIFICATE", der)
	p.write(tb, base+".key", "PRIVATE KEY", kder)
	return base + ".crt", base + ".key"
}

// clientTLS is a requester's TLS configuration: the CA and cn's certificate.
func (p *pki) clientTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	c, k := p.issue(tb, cn)
	cert, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}
}
