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
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/internal/identity"
)

// Keys are generated once per test binary: RSA generation is slow.
var (
	keysOnce sync.Once
	keys     map[string]crypto.Signer
)

func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[string]crypto.Signer{}
		must := func(k crypto.Signer, err error) crypto.Signer {
			if err != nil {
				panic(err)
			}
			return k
		}
		keys["rsa1024"] = must(rsa.GenerateKey(rand.Reader, 1024))
		keys["rsa2048"] = must(rsa.GenerateKey(rand.Reader, 2048))
		keys["p224"] = must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))
		keys["p256"] = must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		keys["p384"] = must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		keys["ed25519"] = must(ed, err)
	})
	k, ok := keys[kind]
	if !ok {
		t.Fatalf("no test key %q", kind)
	}
	return k
}

// request is the x509 side of a test CSR.
type request struct {
	key    string // testKey kind; default p256
	cn     string
	org    []string
	dns    []string
	ips    []net.IP
	emails []string
	uris   []*url.URL
}

func (r request) pem(t testing.TB) []byte {
	t.Helper()
	kind := r.key
	if kind == "" {
		kind = "p256"
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: r.cn, Organization: r.org},
		DNSNames:       r.dns,
		IPAddresses:    r.ips,
		EmailAddresses: r.emails,
		URIs:           r.uris,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, testKey(t, kind))
	if err != nil {
		t.Fatalf("creating certificate request: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// vnodeRequest is a well-formed request for node name.
func vnodeRequest(name string) request {
	return request{cn: identity.VNodeUserPrefix + name, org: []string{identity.VNodesGroup}}
}

var (
	usagesDSCA   = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	usagesDSKECA = []certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment, certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
)

// Requestors as the API server records them.
func bootstrapUser(id string, extra ...string) UserInfo {
	return UserInfo{Username: bootstrapUserPrefix + id, Groups: append([]string{"system:bootstrappers"}, append(extra, "system:authenticated")...)}
}

func vnodeUser(name string) UserInfo {
	return UserInfo{Username: identity.VNodeUserPrefix + name, Groups: []string{identity.VNodesGroup, "system:authenticated"}}
}

func newCSR(name string, pemData []byte, user UserInfo, usages []certificatesv1.KeyUsage) *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pemData,
			SignerName: SignerName,
			Usages:     usages,
			Username:   user.Username,
			UID:        user.UID,
			Groups:     user.Groups,
			Extra:      user.Extra,
		},
	}
}

func tokenSecret(id string, mutate func(s *corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: tokenSecretNamespace, Name: tokenSecretPrefix + id},
		Type:       corev1.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			tokenIDKey:          []byte(id),
			"token-secret":      []byte("0123456789abcdef"),
			tokenUsageAuthKey:   []byte("true"),
			tokenExtraGroupsKey: []byte(identity.BootstrapGroup),
			tokenExpirationKey:  []byte(testNow.Add(time.Hour).Format(time.RFC3339)),
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeAccess allows the users in allow.
type fakeAccess struct {
	mu    sync.Mutex
	allow map[string]bool
	err   error
	calls []string
}

func (f *fakeAccess) CanCreate(_ context.Context, u UserInfo, sub string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, u.Username+" "+sub)
	if f.err != nil {
		return false, f.err
	}
	return sub == BootstrapSubresource && f.allow[u.Username], nil
}

type fakeSecrets struct {
	secrets map[string]*corev1.Secret
	err     error
}

func (f fakeSecrets) GetSecret(ns, name string) (*corev1.Secret, error) {
	if f.err != nil {
		return nil, f.err
	}
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

type fakeNodes struct {
	labels map[string]map[string]string
	err    error
}

func (f fakeNodes) NodeLabels(name string) (map[string]string, bool, error) {
	if f.err != nil {
		return nil, false, f.err
	}
	l, ok := f.labels[name]
	return l, ok, nil
}

// fakeRegistered answers NodeReader from Nodes as the API server has them.
type fakeRegistered struct {
	nodes   map[string]*corev1.Node
	err     error
	listErr error
}

func (f fakeRegistered) GetNode(_ context.Context, name string) (*corev1.Node, error) {
	if f.err != nil {
		return nil, f.err
	}
	if n, ok := f.nodes[name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("nodes"), name)
}

func (f fakeRegistered) ListNodes(context.Context) ([]corev1.Node, error) {
	if f.err != nil || f.listErr != nil {
		return nil, errors.Join(f.err, f.listErr)
	}
	var out []corev1.Node
	for _, n := range f.nodes {
		out = append(out, *n)
	}
	return out, nil
}

var errUnavailable = errors.New("service unavailable")
