package kubeletapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// The kubelet API admits the API server and authorised users, and refuses
// anonymous callers, foreign certificates and users without nodes/* rights;
// checked with the real API server's TokenReview and SubjectAccessReview.
// (The API server's own hop to :10250 is tested end to end in integration/:
// it refuses to proxy to loopback node addresses, so that test gives the
// node an address in a network namespace.)
func TestSecureKubeletAPI(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{WithoutScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, file, _, _ := runtime.Caller(0)
	if out, err := cp.Kubectl(ctx, "apply", "-k", filepath.Join(filepath.Dir(file), "..", "..", "manifests", "vnode")).CombinedOutput(); err != nil {
		t.Fatalf("applying vnode RBAC: %v\n%s", err, out)
	}
	const node = "vn-sec"
	vnodeCfg, err := cp.UserConfig("system:vnode:"+node, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := cp.PKI.ServingCert("kubelet-"+node, []string{node}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	routes := http.NewServeMux()
	routes.HandleFunc("/pods", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "pods of "+node) })
	routes.HandleFunc("/stats/summary", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "{}") })
	h, tlsCfg, err := Secure(ServerConfig{
		NodeName: node, Client: kubernetes.NewForConfigOrDie(vnodeCfg),
		ClientCAFile: cp.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath,
	}, routes)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	defer srv.Close()
	url := "https://" + l.Addr().String()

	pool := x509.NewCertPool()
	pool.AddCert(cp.PKI.CACert)
	get := func(t *testing.T, path string, cert *tls.Certificate, token string) int {
		t.Helper()
		tc := &tls.Config{RootCAs: pool, ServerName: node}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pair := func(t *testing.T, certPEM, keyPEM []byte) *tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	apiserverCert := pair(t, cp.KubeletClient.CertPEM, cp.KubeletClient.KeyPEM)
	nobody, err := cp.PKI.ClientCert("nobody", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := controlplane.NewCA(t.TempDir(), "foreign")
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := foreign.ClientCert("impostor", "kube-apiserver-kubelet-client")
	if err != nil {
		t.Fatal(err)
	}

	// Service accounts: one with the kubelet API role, one without.
	for _, sa := range []string{"scraper", "stranger"} {
		if _, err := cp.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "scraper", Namespace: "default"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		tr, err := cp.Client.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}

	cases := []struct {
		name  string
		path  string
		cert  *tls.Certificate
		token string
		want  int
	}{
		{"health probe is open", "/healthz", nil, "", 200},
		{"anonymous", "/pods", nil, "", 401},
		{"certificate from another CA", "/pods", pair(t, impostor.CertPEM, impostor.KeyPEM), "", 401},
		{"user without nodes/proxy", "/pods", pair(t, nobody.CertPEM, nobody.KeyPEM), "", 403},
		{"the API server's kubelet client", "/pods", apiserverCert, "", 200},
		{"token without rights", "/pods", nil, token("stranger"), 403},
		{"token with rights", "/pods", nil, token("scraper"), 200},
		{"garbage token", "/pods", nil, "not-a-token", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(t, tc.path, tc.cert, tc.token); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}

	// With Anonymous, a caller without credentials is system:anonymous and
	// gets what RBAC grants that user, nothing more; a bad certificate is
	// still refused.
	ah, atls, err := Secure(ServerConfig{
		NodeName: node, Client: kubernetes.NewForConfigOrDie(vnodeCfg),
		ClientCAFile: cp.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath, Anonymous: true,
	}, routes)
	if err != nil {
		t.Fatal(err)
	}
	al, err := tls.Listen("tcp", "127.0.0.1:0", atls)
	if err != nil {
		t.Fatal(err)
	}
	asrv := &http.Server{Handler: ah}
	go asrv.Serve(al)
	defer asrv.Close()
	url = "https://" + al.Addr().String()
	if _, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "anonymous-stats"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/stats"}, ResourceNames: []string{node}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "anonymous-stats"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "anonymous-stats"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "system:anonymous"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		cert *tls.Certificate
		want int
	}{
		{"anonymous where RBAC grants it", "/stats/summary", nil, 200},
		{"anonymous elsewhere", "/pods", nil, 403},
		{"anonymous mode: certificate from another CA", "/stats/summary", pair(t, impostor.CertPEM, impostor.KeyPEM), 401},
		{"anonymous mode: the API server's kubelet client", "/pods", apiserverCert, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(t, tc.path, tc.cert, ""); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}
