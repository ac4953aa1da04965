package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

// writePair writes a self-signed CA certificate named cn and its key, with
// a modification time in the future so a rewrite within the same second is
// still seen as a change.
func writePair(t *testing.T, certFile, keyFile, cn string, at time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestKeyPairAndCABundleReloadWhenFilesChange(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writePair(t, crt, key, "first", time.Now())
	pair, err := NewKeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCABundle(crt)
	if err != nil {
		t.Fatal(err)
	}
	var _ dynamiccertificates.CAContentProvider = ca // the kubelet API's authenticator reads it
	if got, err := pair.Get(); err != nil || !sameCert(got.Certificate[0], first.Raw) {
		t.Fatal("the first pair is not served")
	}
	second := writePair(t, crt, key, "second", time.Now().Add(time.Hour))
	got, err := pair.Get()
	if err != nil || !sameCert(got.Certificate[0], second.Raw) {
		t.Fatalf("the rewritten pair is not served (%v)", err)
	}
	opts, ok := ca.VerifyOptions()
	if !ok {
		t.Fatal("no verify options")
	}
	if _, err := second.Verify(opts); err != nil {
		t.Fatalf("the new CA does not verify its own certificate: %v", err)
	}
	if _, err := first.Verify(opts); err == nil {
		t.Fatal("the old CA is still trusted after the file changed")
	}
	if block, _ := pem.Decode(ca.CurrentCABundleContent()); block == nil || !sameCert(block.Bytes, second.Raw) {
		t.Fatal("CurrentCABundleContent is not the new bundle")
	}
	// A half-written file keeps the last good content.
	if err := os.WriteFile(crt, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(crt, time.Now().Add(2*time.Hour), time.Now().Add(2*time.Hour))
	if got, err := pair.Get(); err != nil || !sameCert(got.Certificate[0], second.Raw) {
		t.Fatalf("a broken rewrite replaced the pair (%v)", err)
	}
	if _, ok := ca.VerifyOptions(); !ok {
		t.Fatal("a broken rewrite dropped the CA")
	}
}

func sameCert(a, b []byte) bool { return string(a) == string(b) }
