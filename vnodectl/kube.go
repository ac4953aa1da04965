package vnodectl

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// admin is the cluster admin's connection: --kubeconfig, then $KUBECONFIG,
// then ~/.kube/config (client-go's own loading rules).
type admin struct {
	config  *rest.Config
	client  kubernetes.Interface
	dynamic dynamic.Interface
	source  string
}

func (g *globals) admin(ctx context.Context) (*admin, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	source := "$KUBECONFIG or ~/.kube/config"
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
		source = g.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no admin kubeconfig: pass --kubeconfig, or set $KUBECONFIG, or write ~/.kube/config")
		}
		return nil, fmt.Errorf("loading the admin kubeconfig (%s): %w", source, err)
	}
	cfg.UserAgent = "vnode"
	// kubectl's limits: client-go's default of 5 queries a second made each
	// apply of a few dozen objects (a GET and a PATCH each) wait seconds.
	cfg.QPS, cfg.Burst = 50, 300
	a := &admin{config: cfg, source: source}
	if a.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("admin kubeconfig %s: %w", source, err)
	}
	if a.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("admin kubeconfig %s: %w", source, err)
	}
	// The server's version, unless the admin named it: an unsupported
	// cluster is refused before anything changes.
	if g.kubernetesVersion == "" {
		v, err := a.client.Discovery().ServerVersion()
		if err != nil {
			return nil, fmt.Errorf("asking the API server %s (admin kubeconfig %s) for its version: %w", cfg.Host, source, err)
		}
		if err := checkKubernetesVersion(v.GitVersion, "the cluster at "+cfg.Host); err != nil {
			return nil, fmt.Errorf("%w (pass --kubernetes-version to state it if the server misreports it)", err)
		}
	}
	return a, nil
}
