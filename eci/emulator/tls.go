package emulator

import (
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
	"os"
	"path/filepath"
	"time"
)

// tlsFiles is the certificate the emulator serves and where it is.
type tlsFiles struct {
	cert     tls.Certificate
	certFile string
}

func (t *tlsFiles) config() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{t.cert}, MinVersion: tls.VersionTLS12}
}

// setUpTLS loads certFile and keyFile, or with neither, the self-signed
// certificate in dataDir/tls, made first if missing, expiring within a
// day or not for 127.0.0.1 and localhost.
func setUpTLS(dataDir, certFile, keyFile string, now time.Time) (*tlsFiles, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("a TLS certificate and its key go together: give both or neither")
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading %s and %s: %w", certFile, keyFile, err)
		}
		return &tlsFiles{cert: c, certFile: certFile}, nil
	}
	dir := filepath.Join(dataDir, "tls")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && usable(c, now) {
		return &tlsFiles{cert: c, certFile: certFile}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := writeSelfSigned(certFile, keyFile, now); err != nil {
		return nil, fmt.Errorf("making a self-signed certificate in %s: %w", dir, err)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the new certificate: %w", err)
	}
	return &tlsFiles{cert: c, certFile: certFile}, nil
}

// usable: c is valid for another day and for the loopback names.
func usable(c tls.Certificate, now time.Time) bool {
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return false
		}
	}
	return now.Add(24*time.Hour).Before(leaf.NotAfter) && leaf.VerifyHostname("127.0.0.1") == nil && leaf.VerifyHostname("localhost") == nil
}

// writeSelfSigned writes a new ECDSA P-256 key (mode 0600) and a
// certificate for 127.0.0.1, ::1 and localhost valid for a year. It signs
// itself as a CA, so a client can trust it by adding it to its roots.
func writeSelfSigned(certFile, keyFile string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "eci-emulator", Organization: []string{"vnode ECI emulator"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a crash between the two writes leaves a pair that
	// does not match, which the next start replaces.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
