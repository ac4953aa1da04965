// Package certs serves and checks TLS for vnode's own listeners:
// certificate and CA files re-read whenever they change (rotation needs no
// restart), and the guard of /metrics endpoints, which admits a client
// certificate from a CA or a bearer token the API server authenticates and
// authorises, as kube-rbac-proxy does.
package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

// fileStamp identifies a file's content cheaply between reloads.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// KeyPair is a certificate and key read from files and re-read whenever
// either changes, so rotation needs no restart. CertFile may hold the key
// too (client-go's certificate store writes one PEM with both).
type KeyPair struct {
	CertFile, KeyFile string

	mu         sync.Mutex
	cs, ks     fileStamp
	cert       *tls.Certificate
	lastReload time.Time
}

// NewKeyPair loads the pair once to fail early on a bad path.
func NewKeyPair(certFile, keyFile string) (*KeyPair, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	k := &KeyPair{CertFile: certFile, KeyFile: keyFile}
	if _, err := k.Get(); err != nil {
		return nil, err
	}
	return k, nil
}

// Get returns the current certificate, reloading it if the files changed.
// A failed reload (a half-written file) keeps the previous pair.
func (k *KeyPair) Get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.CertFile == "" && k.cert != nil { // in memory (SelfSignedPair)
		return k.cert, nil
	}
	cs, cerr := stampOf(k.CertFile)
	ks, kerr := stampOf(k.KeyFile)
	if k.cert != nil && (cerr != nil || kerr != nil || (cs == k.cs && ks == k.ks)) {
		return k.cert, nil
	}
	if cerr != nil {
		return nil, fmt.Errorf("reading certificate %s: %w", k.CertFile, cerr)
	}
	if kerr != nil {
		return nil, fmt.Errorf("reading key %s: %w", k.KeyFile, kerr)
	}
	cert, err := tls.LoadX509KeyPair(k.CertFile, k.KeyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, fmt.Errorf("loading key pair %s: %w", k.CertFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	k.cert, k.cs, k.ks = &cert, cs, ks
	return k.cert, nil
}

// CABundle is a PEM bundle of CA certificates re-read when the file changes.
type CABundle struct {
	File string

	mu   sync.Mutex
	st   fileStamp
	pem  []byte
	pool *x509.CertPool
}

// NewCABundle loads the bundle once to fail early.
func NewCABundle(file string) (*CABundle, error) {
	c := &CABundle{File: file}
	if _, err := c.Pool(); err != nil {
		return nil, err
	}
	return c, nil
}

// Pool returns the current pool, reloading it if the file changed.
func (c *CABundle) Pool() (*x509.CertPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := stampOf(c.File)
	if c.pool != nil && (err != nil || st == c.st) {
		return c.pool, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle %s: %w", c.File, err)
	}
	data, err := os.ReadFile(c.File)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle %s: %w", c.File, err)
	}
	if c.pool != nil && bytes.Equal(data, c.pem) {
		c.st = st
		return c.pool, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		if c.pool != nil {
			return c.pool, nil
		}
		return nil, fmt.Errorf("CA bundle %s holds no certificate", c.File)
	}
	c.pool, c.pem, c.st = pool, data, st
	return c.pool, nil
}

// The CABundle is also the client CA of the Kubernetes authenticators
// (k8s.io/apiserver's CAContentProvider), so the kubelet API reloads its
// client CA the same way as every other vnode listener.

// Name identifies the bundle in the authenticators' logs.
func (c *CABundle) Name() string { return c.File }

// CurrentCABundleContent is the bundle's PEM, re-read if the file changed.
func (c *CABundle) CurrentCABundleContent() []byte {
	_, _ = c.Pool() // a failed reload keeps the last good bundle
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pem
}

// VerifyOptions verifies client certificates against the current bundle.
func (c *CABundle) VerifyOptions() (x509.VerifyOptions, bool) {
	pool, err := c.Pool()
	if err != nil {
		return x509.VerifyOptions{}, false
	}
	return x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, true
}

// AddListener does nothing: the bundle is checked on every use, so there
// is no change to announce.
func (c *CABundle) AddListener(dynamiccertificates.Listener) {}
