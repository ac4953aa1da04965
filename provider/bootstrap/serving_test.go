package bootstrap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/provider/kubeletapi"
)

// fakeManager is a certificate manager whose current pair the test sets,
// as a renewal would.
type fakeManager struct {
	cur atomic.Pointer[tls.Certificate]
}

func (f *fakeManager) Start()                    {}
func (f *fakeManager) Stop()                     {}
func (f *fakeManager) ServerHealthy() bool       { return true }
func (f *fakeManager) Current() *tls.Certificate { return f.cur.Load() }

func selfSigned(t *testing.T, serial int64) (*tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: identity.NodeUserPrefix + "vn-1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// The kubelet API serves the certificate manager's current pair on each
// handshake: none before the CSR is signed, then the first, then the
// renewed one, without a restart.
func TestKubeletAPIServesTheRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	_, caLeaf := selfSigned(t, 99)
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caLeaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &fakeManager{}
	s := &Serving{manager: m, log: logrus.New(), stop: make(chan struct{})}
	h, tlsCfg, err := kubeletapi.Secure(kubeletapi.ServerConfig{
		NodeName: "vn-1", Client: kubernetes.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1"}),
		ClientCAFile: caFile, GetCertificate: s.GetCertificate,
	}, http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	served := func() (*x509.Certificate, error) {
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads what is served
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	if c, err := served(); err == nil {
		t.Fatalf("served certificate %s before one was signed", c.SerialNumber)
	}
	if _, err := s.GetCertificate(nil); !errors.Is(err, ErrNoServingCertificate) {
		t.Fatalf("GetCertificate before signing: %v", err)
	}
	for _, serial := range []int64{1, 2} {
		pair, leaf := selfSigned(t, serial)
		m.cur.Store(pair)
		got, err := served()
		if err != nil {
			t.Fatalf("handshake with certificate %d: %v", serial, err)
		}
		if !got.Equal(leaf) {
			t.Fatalf("served serial %s, want %d", got.SerialNumber, serial)
		}
	}
}

func TestServingTemplate(t *testing.T) {
	tmpl := ServingTemplate("vn-1", []net.IP{net.ParseIP("10.0.0.1")}, []string{"vn-1", "vn-1.internal"})
	if tmpl.Subject.CommonName != identity.NodeUserPrefix+"vn-1" || len(tmpl.Subject.Organization) != 1 || tmpl.Subject.Organization[0] != identity.NodesGroup {
		t.Fatalf("subject %v", tmpl.Subject)
	}
	if len(tmpl.DNSNames) != 2 || tmpl.DNSNames[0] != "vn-1" || tmpl.DNSNames[1] != "vn-1.internal" || len(tmpl.IPAddresses) != 1 {
		t.Fatalf("SANs DNS %q IP %v", tmpl.DNSNames, tmpl.IPAddresses)
	}
}
