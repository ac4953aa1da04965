package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vnode-project/vnode/internal/certs"
)

// fakeReviews answers TokenReviews (token "prom-token" is user prom,
// "nobody-token" user nobody) and SubjectAccessReviews (only prom may get
// /metrics), checking that the review asks about get /metrics.
func fakeReviews(t *testing.T) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case "prom-token":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "prom", Groups: []string{"monitoring"}}}
		case "nobody-token":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "nobody"}}
		}
		return true, tr, nil
	})
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		na := sar.Spec.NonResourceAttributes
		if na == nil || na.Path != "/metrics" || na.Verb != "get" {
			t.Errorf("SubjectAccessReview asks about %+v, want get /metrics", na)
		}
		sar.Status.Allowed = sar.Spec.User == "prom" && len(sar.Spec.Groups) == 1
		return true, sar, nil
	})
	return c
}

// serveMeta serves the meta endpoints with auth on loopback over TLS.
func serveMeta(t *testing.T, ca *testCA, auth *certs.MetricsAuth) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	NewMetrics(reg).Stalls.Inc()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: metaHandler(reg, func() bool { return true }, auth), ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: certs.MetaTLSConfig(ca.pair(t, "tunnel.test"), auth)}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + l.Addr().String()
}

// get fetches path with an optional client certificate and bearer token.
func get(t *testing.T, ca *testCA, base, path string, cert *certs.KeyPair, token string) (int, string, error) {
	t.Helper()
	pool, _ := ca.bundle(t).Pool()
	cfg := &tls.Config{RootCAs: pool, ServerName: "tunnel.test"}
	if cert != nil {
		c := mustCert(t, cert)
		cfg.Certificates = []tls.Certificate{c}
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestMetricsNeedAuthentication(t *testing.T) {
	ca, other := newTestCA(t, "metrics"), newTestCA(t, "other")
	base := serveMeta(t, ca, &certs.MetricsAuth{CA: ca.bundle(t), Client: fakeReviews(t), Log: testLog(t)})
	for _, tc := range []struct {
		name, path, token string
		cert              *certs.KeyPair
		want              int
	}{
		{"healthz is open", "/healthz", "", nil, http.StatusOK},
		{"readyz is open", "/readyz", "", nil, http.StatusOK},
		{"no credentials", "/metrics", "", nil, http.StatusUnauthorized},
		{"unknown token", "/metrics", "forged", nil, http.StatusUnauthorized},
		{"token without the right", "/metrics", "nobody-token", nil, http.StatusForbidden},
		{"token allowed get /metrics", "/metrics", "prom-token", nil, http.StatusOK},
		{"client certificate from the metrics CA", "/metrics", "", ca.pair(t, "prometheus"), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := get(t, ca, base, tc.path, tc.cert, tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
			if tc.path == "/metrics" && code == http.StatusOK && !strings.Contains(body, "vnode_tunnel_flow_control_stalls_total 1") {
				t.Fatalf("metrics body lacks the tunnel's metrics:\n%s", body)
			}
		})
	}
	// A certificate from another CA gets nothing: Go's client does not
	// even offer it (the server names its CA), and one that is offered
	// fails the handshake.
	if code, _, err := get(t, ca, base, "/metrics", other.pair(t, "intruder"), ""); err == nil && code != http.StatusUnauthorized {
		t.Fatalf("a client certificate from another CA got status %d", code)
	}
}

// An agent has no API client: only client certificates, and with no CA
// configured nobody reads /metrics.
func TestAgentMetricsWithoutAPIClient(t *testing.T) {
	ca := newTestCA(t, "metrics")
	base := serveMeta(t, ca, &certs.MetricsAuth{Log: testLog(t)})
	if code, _, err := get(t, ca, base, "/metrics", nil, "prom-token"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("bearer token on an agent: %d %v, want 401", code, err)
	}
	if code, _, err := get(t, ca, base, "/healthz", nil, ""); err != nil || code != http.StatusOK {
		t.Fatalf("healthz: %d %v", code, err)
	}
	base = serveMeta(t, ca, &certs.MetricsAuth{CA: ca.bundle(t), Log: testLog(t)})
	if code, _, err := get(t, ca, base, "/metrics", ca.pair(t, "prometheus"), ""); err != nil || code != http.StatusOK {
		t.Fatalf("client certificate on an agent: %d %v, want 200", code, err)
	}
}
