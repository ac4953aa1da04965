package controlplane

import (
	"fmt"
	"os"
)

// WriteEgressSelectorConfig writes kube-apiserver's egress selector
// configuration (Options.EgressSelectorConfigFile) sending the "cluster"
// egress (the kubelet API, node and pod proxy, Service-backed webhooks and
// aggregated APIs) as HTTP CONNECT over TLS to the edge tunnel server at
// addr, with the client certificate certFile/keyFile and the server
// verified with caFile: manifests/tunnel/egress-selector.yaml's shape.
func WriteEgressSelectorConfig(path, addr, caFile, certFile, keyFile string) ([]byte, error) {
	cfg := []byte(fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      tcp:
        url: https://%s
        tlsConfig:
          caBundle: %s
          clientCert: %s
          clientKey: %s
`, addr, caFile, certFile, keyFile))
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("writing the egress selector configuration %s: %w", path, err)
	}
	return cfg, nil
}
