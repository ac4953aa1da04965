package cli

import (
	"fmt"
	"net"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/internal/certs"
)

// RESTConfig loads kubeconfig, or the in-cluster config when it is "".
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("loading in-cluster config (or pass --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}

// Listen listens on addr for the named flag; "" listens nowhere (nil).
func Listen(addr, flag string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return l, nil
}

// KeyPair loads the certificate and key a flag names; none ("") is nil.
func KeyPair(certFile, keyFile, flag string) (*certs.KeyPair, error) {
	if certFile == "" {
		return nil, nil
	}
	pair, err := certs.NewKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return pair, nil
}

// CABundle loads the CA bundle a flag names; none ("") is nil.
func CABundle(file, flag string) (*certs.CABundle, error) {
	if file == "" {
		return nil, nil
	}
	ca, err := certs.NewCABundle(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return ca, nil
}
