package approver

import (
	"context"
	"fmt"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// testFreshTokens: a bootstrap token used the moment the API server accepts
// it (an operator creating a token and joining a node at once) must not have
// its CSR denied because vnode-approver's Secret cache has not caught up.
func testFreshTokens(ctx context.Context, t *testing.T, e *env) {
	const n = 30
	names := make([]string, n)
	for i := range names {
		var err error
		if names[i], err = freshTokenCSR(ctx, t, e, fmt.Sprintf("frsh%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range names {
		csr, err := waitForCSR(ctx, e.cp.Client, names[i], time.Minute, decided)
		if err != nil {
			t.Fatal(err)
		}
		if condition(csr, certificatesv1.CertificateApproved) == nil {
			t.Errorf("CSR %s from a fresh token was not approved: %+v", csr.Name, csr.Status.Conditions)
		}
	}
}

// freshTokenCSR creates bootstrap token id and, as soon as the API server
// authenticates it (its token cache lags the Secret too), a CSR with it.
func freshTokenCSR(ctx context.Context, t *testing.T, e *env, id string) (string, error) {
	client := clientFor(t, createToken(ctx, t, e.cp, id, []string{bootstrapGroup}, nil))
	name := "fresh-" + id
	csr := newCSR(name, certificatesv1.KubeAPIServerClientSignerName, vnodeRequest("vn-"+id).pem(t), usagesClient, 0)
	err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
		if apierrors.IsUnauthorized(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return name, fmt.Errorf("creating CSR %s with fresh token %s: %w", name, id, err)
	}
	return name, nil
}
