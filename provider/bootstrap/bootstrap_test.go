package bootstrap

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
)

// A virtual node with only a bootstrap kubeconfig gets a client certificate
// for system:vnode:<node>, uses it, renews it as itself, and reuses it after
// a restart — on a real control plane whose kube-controller-manager signs
// (1-minute certificates, so renewal comes within seconds).
func TestBootstrapRenewRestart(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{
		DisableCSRApprover:          true,
		ExtraControllerManagerFlags: []string{"--cluster-signing-duration=1m"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	applyManifests(ctx, t, cp)
	createBootstrapToken(ctx, t, cp.Client, "abcdef", "0123456789abcdef")

	dir := t.TempDir()
	bootKubeconfig := filepath.Join(dir, "bootstrap.kubeconfig")
	if err := controlplane.WriteKubeconfig(bootKubeconfig, cp.BootstrapTokenConfig("abcdef", "0123456789abcdef"), "bootstrap"); err != nil {
		t.Fatal(err)
	}
	approved := approveCSRs(ctx, t, cp.Client)

	cfg := Config{
		NodeName:            "vn-1",
		BootstrapKubeconfig: bootKubeconfig,
		CertDir:             filepath.Join(dir, "pki"),
		KubeconfigPath:      filepath.Join(dir, "kubeconfig"),
		Lifetime:            10 * time.Minute,
		Log:                 logrus.New(),
	}
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := c.Certificate()
	if first.Subject.CommonName != "system:vnode:vn-1" || len(first.Subject.Organization) != 1 || first.Subject.Organization[0] != "system:vnodes" {
		t.Fatalf("certificate subject %v", first.Subject)
	}
	if got := approved.first(); got.Spec.Username != "system:bootstrap:abcdef" || got.Spec.SignerName != SignerName {
		t.Fatalf("bootstrap CSR from %q for %q", got.Spec.Username, got.Spec.SignerName)
	}
	for _, p := range []string{cfg.KubeconfigPath, filepath.Join(cfg.CertDir, "vnode-client-current.pem")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v (%v), want 0600", p, fi.Mode().Perm(), err)
		}
	}
	whoami(ctx, t, kubernetes.NewForConfigOrDie(c.RESTConfig()), "system:vnode:vn-1")
	// The written kubeconfig works on its own (e.g. for kubectl).
	out, err := cp.Kubectl(ctx, "--kubeconfig", cfg.KubeconfigPath, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if err != nil || string(out) != "system:vnode:vn-1" {
		t.Fatalf("kubectl with the written kubeconfig: %v %s", err, out)
	}

	// Renewal, as the node itself, without a restart.
	deadline := time.Now().Add(2 * time.Minute)
	for c.Certificate().Equal(first) {
		if time.Now().After(deadline) {
			t.Fatal("certificate not renewed within 2 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	renewal := approved.last()
	if renewal.Spec.Username != "system:vnode:vn-1" {
		t.Fatalf("renewal requested by %q, want the node itself", renewal.Spec.Username)
	}
	whoami(ctx, t, kubernetes.NewForConfigOrDie(c.RESTConfig()), "system:vnode:vn-1")
	c.Stop()

	// A restart reuses the stored certificate: no new CSR, even though the
	// bootstrap token is gone.
	if err := cp.Client.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-abcdef", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := approved.count()
	c2, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop()
	if approved.count() != before {
		t.Fatalf("restart sent a new CSR (%d -> %d)", before, approved.count())
	}
	whoami(ctx, t, kubernetes.NewForConfigOrDie(c2.RESTConfig()), "system:vnode:vn-1")
}

func TestStartWithoutCredentials(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Config{NodeName: "n", CertDir: dir, KubeconfigPath: filepath.Join(dir, "kc")})
	if err == nil {
		t.Fatal("started with neither a certificate nor a bootstrap kubeconfig")
	}
}

func whoami(ctx context.Context, t *testing.T, client kubernetes.Interface, want string) {
	t.Helper()
	r, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review: %v", err)
	}
	if r.Status.UserInfo.Username != want {
		t.Fatalf("authenticated as %q, want %q", r.Status.UserInfo.Username, want)
	}
	found := false
	for _, g := range r.Status.UserInfo.Groups {
		found = found || g == identity.VNodesGroup
	}
	if !found {
		t.Fatalf("groups %v lack %s", r.Status.UserInfo.Groups, identity.VNodesGroup)
	}
}

func applyManifests(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "manifests", "vnode")
	if out, err := cp.Kubectl(ctx, "apply", "-k", dir).CombinedOutput(); err != nil {
		t.Fatalf("applying %s: %v\n%s", dir, err, out)
	}
}

func createBootstrapToken(ctx context.Context, t *testing.T, client kubernetes.Interface, id, secret string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"token-id": id, "token-secret": secret,
			"usage-bootstrap-authentication": "true",
			"auth-extra-groups":              "system:bootstrappers:vnode",
			"expiration":                     time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		},
	}
	if _, err := client.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating bootstrap token: %v", err)
	}
}

// csrLog records the CSRs the test approved, in order.
type csrLog struct {
	mu   sync.Mutex
	csrs []certificatesv1.CertificateSigningRequest
}

func (l *csrLog) add(c certificatesv1.CertificateSigningRequest) {
	l.mu.Lock()
	l.csrs = append(l.csrs, c)
	l.mu.Unlock()
}
func (l *csrLog) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.csrs) }
func (l *csrLog) first() certificatesv1.CertificateSigningRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.csrs[0]
}
func (l *csrLog) last() certificatesv1.CertificateSigningRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.csrs[len(l.csrs)-1]
}

// approveCSRs stands in for vnode-approver (tested on its own): it approves
// every pending client CSR whose subject is a vnode's, after checking it.
func approveCSRs(ctx context.Context, t *testing.T, client kubernetes.Interface) *csrLog {
	t.Helper()
	log := &csrLog{}
	w, err := client.CertificatesV1().CertificateSigningRequests().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !ok || ev.Type != watch.Added || len(csr.Status.Conditions) > 0 {
				continue
			}
			block, _ := pem.Decode(csr.Spec.Request)
			req, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil || req.Subject.CommonName != "system:vnode:vn-1" {
				continue
			}
			csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
				Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApproved", Message: "approved by the test",
			})
			if _, err := client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err == nil {
				log.add(*csr)
			}
		}
	}()
	return log
}
