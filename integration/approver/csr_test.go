package approver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Keys are generated once per test binary: RSA generation is slow.
var (
	keysOnce sync.Once
	keys     map[string]crypto.Signer
	keysErr  error
)

func testKey(tb testing.TB, kind string) crypto.Signer {
	tb.Helper()
	keysOnce.Do(func() { keys, keysErr = generateKeys() })
	if keysErr != nil {
		tb.Fatalf("generating test keys: %v", keysErr)
	}
	k, ok := keys[kind]
	if !ok {
		tb.Fatalf("no test key %q", kind)
	}
	return k
}

func generateKeys() (map[string]crypto.Signer, error) {
	out := map[string]crypto.Signer{}
	var err error
	if out["rsa1024"], err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
		return nil, err
	}
	if out["rsa2048"], err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	for name, curve := range map[string]elliptic.Curve{"p224": elliptic.P224(), "p256": elliptic.P256(), "p384": elliptic.P384()} {
		if out[name], err = ecdsa.GenerateKey(curve, rand.Reader); err != nil {
			return nil, err
		}
	}
	if _, out["ed25519"], err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	return out, nil
}

// request is the x509 side of a CSR.
type request struct {
	key    string // testKey kind; default p256
	cn     string
	org    []string
	dns    []string
	ips    []net.IP
	emails []string
	uris   []*url.URL
}

// vnodeRequest is a well-formed request for node.
func vnodeRequest(node string) request {
	return request{cn: vnodeUser(node), org: []string{vnodeGroup}}
}

func (r request) keyKind() string {
	if r.key == "" {
		return "p256"
	}
	return r.key
}

func (r request) pem(tb testing.TB) []byte {
	tb.Helper()
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: r.cn, Organization: r.org},
		DNSNames:       r.dns,
		IPAddresses:    r.ips,
		EmailAddresses: r.emails,
		URIs:           r.uris,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, testKey(tb, r.keyKind()))
	if err != nil {
		tb.Fatalf("creating certificate request for %q: %v", r.cn, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

var (
	usagesClient   = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	usagesClientKE = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageClientAuth}
	// A kubelet-serving certificate: key encipherment with RSA keys only.
	usagesServing   = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	usagesServingKE = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
)

func newCSR(name, signer string, req []byte, usages []certificatesv1.KeyUsage, expiration time.Duration) *certificatesv1.CertificateSigningRequest {
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    req,
			SignerName: signer,
			Usages:     usages,
		},
	}
	if expiration > 0 {
		s := int32(expiration / time.Second)
		csr.Spec.ExpirationSeconds = &s
	}
	return csr
}

func condition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if csr.Status.Conditions[i].Type == t {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	return condition(csr, certificatesv1.CertificateApproved) != nil ||
		condition(csr, certificatesv1.CertificateDenied) != nil ||
		condition(csr, certificatesv1.CertificateFailed) != nil
}

// waitForCSR polls CSR name until done says so.
func waitForCSR(ctx context.Context, client kubernetes.Interface, name string, timeout time.Duration, done func(*certificatesv1.CertificateSigningRequest) bool) (*certificatesv1.CertificateSigningRequest, error) {
	var last *certificatesv1.CertificateSigningRequest
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		csr, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("reading CSR %s: %w", name, err)
		}
		last = csr
		return done(csr), nil
	})
	if err != nil {
		return last, fmt.Errorf("waiting for CSR %s (last status %+v): %w", name, statusOf(last), err)
	}
	return last, nil
}

func statusOf(csr *certificatesv1.CertificateSigningRequest) any {
	if csr == nil {
		return "none"
	}
	return struct {
		Conditions  []certificatesv1.CertificateSigningRequestCondition
		Certificate bool
	}{csr.Status.Conditions, len(csr.Status.Certificate) > 0}
}

// decide writes an Approved or Denied condition as an administrator would.
func decide(ctx context.Context, client kubernetes.Interface, name string, t certificatesv1.RequestConditionType, reason string) error {
	csr, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading CSR %s: %w", name, err)
	}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: "decided by the test's administrator",
	})
	if _, err := client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing %s on CSR %s: %w", t, name, err)
	}
	return nil
}

// checkIssued checks that csr's certificate is for the requested subject
// and key, and is a client certificate (a serving one from the
// kubelet-serving signer).
func checkIssued(csr *certificatesv1.CertificateSigningRequest, want request, key crypto.Signer) error {
	block, _ := pem.Decode(csr.Status.Certificate)
	if block == nil {
		return fmt.Errorf("status.certificate of %s holds no PEM block", csr.Name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parsing the certificate of %s: %w", csr.Name, err)
	}
	eku := x509.ExtKeyUsageClientAuth
	if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		eku = x509.ExtKeyUsageServerAuth
	}
	switch {
	case cert.Subject.CommonName != want.cn || !slices.Equal(cert.Subject.Organization, want.org):
		return fmt.Errorf("certificate of %s is for CN=%q O=%q, want CN=%q O=%q", csr.Name, cert.Subject.CommonName, cert.Subject.Organization, want.cn, want.org)
	case !publicKeyEqual(cert.PublicKey, key.Public()):
		return fmt.Errorf("certificate of %s certifies another key", csr.Name)
	case !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{eku}):
		return fmt.Errorf("certificate of %s has extended usages %v, want %v only", csr.Name, cert.ExtKeyUsage, eku)
	}
	return nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
