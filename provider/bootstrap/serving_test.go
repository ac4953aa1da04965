package bootstrap

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
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

	"github.com/vnode-project/vnode/internal/certs"
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

func selfSigned(t *testing.T) (*tls.Certificate, *x509.Certificate) {
	t.Helper()
	pair, err := certs.SelfSignedPair(identity.NodeUserPrefix + "vn-1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.Get()
	if err != nil {
		t.Fatal(err)
	}
	return cert, cert.Leaf
}

// The kubelet API serves the certificate manager's current pair on each
// handshake: none before the CSR is signed, then the first, then the
// renewed one, without a restart.
func TestKubeletAPIServesTheRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	_, caLeaf := selfSigned(t)
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
	for _, what := range []string{"first", "renewed"} {
		pair, leaf := selfSigned(t)
		m.cur.Store(pair)
		got, err := served()
		if err != nil {
			t.Fatalf("handshake with the %s certificate: %v", what, err)
		}
		if !got.Equal(leaf) {
			t.Fatalf("served serial %s, want the %s certificate's %s", got.SerialNumber, what, leaf.SerialNumber)
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
