package approver

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	vnapprover "github.com/vnode-project/vnode/approver"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/provider/bootstrap"
)

// virtualNode is a virtual node's identity from provider/bootstrap,
// starting from a bootstrap-token kubeconfig only.
type virtualNode struct {
	name   string
	cfg    bootstrap.Config
	client *bootstrap.Client
}

// startVirtualNode creates bootstrap token id and bootstraps node name with
// it; it returns once the node holds a signed certificate. The control
// plane signs 1-minute certificates (see TestApprover), so the node renews
// within about 25 s without a restart.
func startVirtualNode(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, name, tokenID string) *virtualNode {
	t.Helper()
	dir := t.TempDir()
	bootKubeconfig := filepath.Join(dir, "bootstrap.kubeconfig")
	if err := controlplane.WriteKubeconfig(bootKubeconfig, cp.BootstrapTokenConfig(tokenID, tokenID+"0123456789"), "bootstrap"); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "bootstrap.log"))
	if err != nil {
		t.Fatalf("creating the bootstrap log: %v", err)
	}
	log := logrus.New()
	log.SetOutput(logf)
	n := &virtualNode{name: name, cfg: bootstrap.Config{
		NodeName:            name,
		BootstrapKubeconfig: bootKubeconfig,
		CertDir:             filepath.Join(dir, "pki"),
		KubeconfigPath:      filepath.Join(dir, "kubeconfig"),
		// The API's minimum; the signer caps it at --cluster-signing-duration.
		Lifetime: 10 * time.Minute,
		Log:      log,
	}}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if n.client, err = bootstrap.Start(startCtx, n.cfg); err != nil {
		t.Fatalf("bootstrapping virtual node %s: %v", name, err)
	}
	t.Cleanup(func() {
		n.client.Stop()
		logf.Close()
	})
	return n
}

// testBootstrap: a virtual node with only a bootstrap token gets a signed
// client certificate through vnode-approver, acts as system:vnode:<name>,
// and renews its certificate as itself.
func testBootstrap(ctx context.Context, t *testing.T, e *env) {
	const name, tokenID = "vn-e2e", "e2enod"
	createToken(ctx, t, e.cp, tokenID, []string{bootstrapGroup}, nil)
	n := startVirtualNode(ctx, t, e.cp, name, tokenID)
	first := n.client.Certificate()
	if first.Subject.CommonName != vnodeUser(name) || !slices.Equal(first.Subject.Organization, []string{vnodeGroup}) {
		t.Fatalf("certificate subject is %v, want CN=%s O=%s", first.Subject, vnodeUser(name), vnodeGroup)
	}
	checkIssuedBy(ctx, t, e.cp.Client, first, "system:bootstrap:"+tokenID)

	client := kubernetes.NewForConfigOrDie(n.client.RESTConfig())
	whoami(ctx, t, client, vnodeUser(name))
	registerNode(ctx, t, client, name)

	renewed := waitForRenewal(ctx, t, n, first)
	checkIssuedBy(ctx, t, e.cp.Client, renewed, vnodeUser(name))
	// The kubeconfig bootstrap wrote points at the current pair: a new
	// process authenticates with the renewed certificate.
	out, err := e.cp.Kubectl(ctx, "--kubeconfig", n.cfg.KubeconfigPath, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), vnodeUser(name)+" ") || !strings.Contains(string(out), vnodeGroup) {
		t.Fatalf("kubectl auth whoami with the renewed certificate: %v: %s", err, out)
	}
	whoami(ctx, t, kubernetes.NewForConfigOrDie(n.client.RESTConfig()), vnodeUser(name))
}

// waitForRenewal waits until the node's certificate changes.
func waitForRenewal(ctx context.Context, t *testing.T, n *virtualNode, old *x509.Certificate) *x509.Certificate {
	t.Helper()
	var cur *x509.Certificate
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		cur = n.client.Certificate()
		return cur != nil && !cur.Equal(old), nil
	})
	if err != nil {
		t.Fatalf("certificate of %s (notAfter %s) not renewed within 2 minutes: %v", n.name, old.NotAfter, err)
	}
	t.Logf("renewed: notBefore %s notAfter %s (old notAfter %s)", cur.NotBefore, cur.NotAfter, old.NotAfter)
	return cur
}

// checkIssuedBy checks that cert came from a CSR requested by requestor and
// approved by vnode-approver.
func checkIssuedBy(ctx context.Context, t *testing.T, admin kubernetes.Interface, cert *x509.Certificate, requestor string) {
	t.Helper()
	csr, err := csrFor(ctx, admin, cert)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Spec.Username != requestor {
		t.Fatalf("CSR %s for the certificate was requested by %q, want %q", csr.Name, csr.Spec.Username, requestor)
	}
	a := condition(csr, certificatesv1.CertificateApproved)
	if a == nil || a.Reason != "AutoApproved" || !strings.Contains(a.Message, "virtual node") {
		t.Fatalf("CSR %s was not approved by vnode-approver: %+v", csr.Name, csr.Status.Conditions)
	}
	t.Logf("CSR %s requested by %s: %s", csr.Name, requestor, a.Message)
}

// csrFor finds the CSR whose issued certificate is cert (client or
// serving).
func csrFor(ctx context.Context, admin kubernetes.Interface, cert *x509.Certificate) (*certificatesv1.CertificateSigningRequest, error) {
	signer := vnapprover.SignerName
	if slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		signer = vnapprover.ServingSignerName
	}
	list, err := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{FieldSelector: "spec.signerName=" + signer})
	if err != nil {
		return nil, fmt.Errorf("listing CSRs: %w", err)
	}
	for i := range list.Items {
		if block, _ := pem.Decode(list.Items[i].Status.Certificate); block != nil && string(block.Bytes) == string(cert.Raw) {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no CSR issued the certificate with serial %s", cert.SerialNumber)
}

// whoami checks with a SelfSubjectReview that client is user in
// system:vnodes.
func whoami(ctx context.Context, t *testing.T, client kubernetes.Interface, user string) {
	t.Helper()
	r, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview as %s: %v", user, err)
	}
	if got := r.Status.UserInfo; got.Username != user || !slices.Contains(got.Groups, vnodeGroup) {
		t.Fatalf("authenticated as %q in %q, want %q in %s", got.Username, got.Groups, user, vnodeGroup)
	}
}

// registerNode creates the virtual node's Node as the node itself, as
// virtual-kubelet does, and reads it back.
func registerNode(ctx context.Context, t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "virtual-kubelet.io/provider", Value: "alibabacloud", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("registering node %s as itself: %v", name, err)
	}
	got, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading node %s as itself: %v", name, err)
	}
	if got.Labels[identity.NodeTypeLabel] != identity.NodeTypeVirtual {
		t.Fatalf("node %s has labels %v", name, got.Labels)
	}
}
