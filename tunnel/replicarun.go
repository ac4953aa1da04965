package tunnel

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
)

// ReplicaOptions say how a replica names itself, counts the replicas and
// gets its serving certificate.
type ReplicaOptions struct {
	Name string // this replica, e.g. its pod's name (a random suffix is added per process)
	// Namespace of CountService and the serving certificate's Services,
	// Secret and ConfigMap.
	Namespace string
	// CountService is the Service whose ready endpoints are the replicas
	// (empty: the count is unknown and agents hold one session per
	// address their server name resolves to).
	CountService string
	// ServingCert provisions the agent-facing certificate when
	// ServerRunOptions.AgentCertFile is empty (Client and Namespace are
	// filled in).
	ServingCert ServingCertConfig
}

// setupReplicas fills cfg.Replicas and, without a certificate file,
// cfg.AgentCert; it returns whether the replica count is synced.
func setupReplicas(ctx context.Context, client kubernetes.Interface, o ServerRunOptions, log *logrus.Entry, cfg *ServerConfig) (func() bool, error) {
	ro := o.Replicas
	if ro.Namespace == "" {
		ro.Namespace = "kube-system"
	}
	cfg.Replicas = NewReplicas(ro.Name)
	synced := func() bool { return true }
	if ro.CountService != "" {
		s, err := WatchReplicaCount(ctx, client, ro.Namespace, ro.CountService, cfg.Replicas, log)
		if err != nil {
			return nil, err
		}
		synced = s
	}
	if o.AgentCertFile == "" {
		sc := ro.ServingCert
		sc.Client, sc.Namespace = client, ro.Namespace
		if sc.Log == nil {
			sc.Log = log
		}
		pair, err := ProvisionServingCert(ctx, sc)
		if err != nil {
			return nil, fmt.Errorf("provisioning the serving certificate: %w", err)
		}
		cfg.AgentCert = pair
	}
	log.WithField("replica", cfg.Replicas.ID()).Info("replica named")
	return synced, nil
}
