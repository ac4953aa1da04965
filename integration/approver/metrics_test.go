package approver

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

var servingMetrics = regexp.MustCompile(`msg=serving address="?([0-9.:]+)"? server=metrics`)

// /metrics answers only a caller the API server authenticates and allows
// to get /metrics; /healthz stays open to probes.
func testMetricsAuth(ctx context.Context, t *testing.T, e *env) {
	var addr string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		m := servingMetrics.FindStringSubmatch(e.approver.log())
		if m != nil {
			addr = m[1]
		}
		return m != nil, nil
	}); err != nil {
		t.Fatalf("no metrics address in the approver's log:\n%s", tail(e.approver.log(), 20))
	}
	scraper := "metrics-scraper"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "vnode-test-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "vnode-test-metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: scraper}}}
	for _, err := range []error{
		ignoreExists(e.cp.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})),
		ignoreExists(e.cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	allowed := e.serviceAccountConfig(ctx, t, "default", scraper).BearerToken
	other := e.serviceAccountConfig(ctx, t, "default", "not-a-scraper").BearerToken

	// The serving certificate is self-signed: what is checked here is the
	// caller, not the server.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test client of a self-signed endpoint
	get := func(token string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := get("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("unknown token: %d, want 401", code)
	}
	if code, _ := get(other); code != http.StatusForbidden {
		t.Errorf("token without the right: %d, want 403", code)
	}
	// RBAC reaches the authorizer's cache a moment after the binding.
	var body string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		var code int
		code, body = get(allowed)
		return code == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("allowed token refused: %s", body)
	}
	if !strings.Contains(body, "vnode_approver_") {
		t.Errorf("metrics lack the approver's series:\n%s", tail(body, 10))
	}
	// The TLS port does not serve plain HTTP.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/metrics served over plain HTTP")
		}
	}
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
