package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
)

// WebhookClientAuth makes, in dir, a CA for webhook callers and the
// AdmissionConfiguration that has kube-apiserver present a certificate
// from it to every mutating webhook (user "*"), as a hardened cluster
// does; it returns the CA (a webhook's --client-ca-file) and the
// kube-apiserver flags that load it.
func WebhookClientAuth(dir string) (*PKI, []string, error) {
	ca, err := NewCA(dir, "webhook-client-ca")
	if err != nil {
		return nil, nil, err
	}
	pair, err := ca.ClientCert("apiserver-webhook-client", "kube-apiserver")
	if err != nil {
		return nil, nil, err
	}
	kubeconfig := filepath.Join(dir, "webhook-client.kubeconfig")
	admission := filepath.Join(dir, "admission.yaml")
	files := map[string]string{
		kubeconfig: fmt.Sprintf("apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: %s\n    client-key: %s\n", pair.CertPath, pair.KeyPath),
		admission: fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, kubeconfig),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return nil, nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return ca, []string{"--admission-control-config-file=" + admission}, nil
}
