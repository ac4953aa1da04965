package local

import (
	"context"
	"fmt"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// tokenKubeconfig writes a kubeconfig with a token the TokenRequest API
// issues for ServiceAccount namespace/account, so a process run outside
// the cluster has exactly the RBAC manifests/ grants that account.
func (s *System) tokenKubeconfig(ctx context.Context, namespace, account string) (string, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(24 * 3600))}}
	tr, err := s.CP.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", namespace, account, err)
	}
	path := filepath.Join(s.CP.Dir, "addons", account+".kubeconfig")
	cfg := &rest.Config{Host: s.CP.APIServerURL, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: s.CP.PKI.CAPEM()}}
	if err := controlplane.WriteKubeconfig(path, cfg, "system:serviceaccount:"+namespace+":"+account); err != nil {
		return "", err
	}
	fmt.Fprintf(s.out, "# %s: a 24h token for ServiceAccount %s/%s (TokenRequest API)\n", path, namespace, account)
	return path, nil
}
