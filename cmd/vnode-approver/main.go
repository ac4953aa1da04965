// Command vnode-approver approves the client certificates of virtual nodes
// (system:vnode:<node> in group system:vnodes, signer
// kubernetes.io/kube-apiserver-client) and denies look-alikes.
package main

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/approver"
	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/internal/version"
)

func main() { cli.Execute(newCommand()) }

type options struct {
	kubeconfig     string
	kubeAPIQPS     float32
	kubeAPIBurst   int
	workers        int
	accessCacheTTL time.Duration
	maxExpiration  time.Duration
	bootstrapGroup string
	deny           bool
	dryRun         bool
	resync         time.Duration
	leaderElect    bool
	leaseNamespace string
	leaseName      string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	meta           cli.MetaFlags
	logLevel       string
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:     "vnode-approver",
		Version: version.String(),
		Short:   "Approve virtual nodes' client certificate signing requests",
		Long: `vnode-approver approves CSRs for the kubernetes.io/kube-apiserver-client
signer whose subject is CN=system:vnode:<node>, O=system:vnodes, with no SANs,
client-auth usages, an acceptable key and expiry, sent by the node itself
(renewal) or by a valid vnode bootstrap token allowed to create
certificatesigningrequests/vnodeclient (bootstrap). CSRs that look like a
virtual node's but fail a check are denied with the check's name; all others
are ignored.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	f.Float32Var(&o.kubeAPIQPS, "kube-api-qps", approver.DefaultKubeAPIQPS, "API client queries per second")
	f.IntVar(&o.kubeAPIBurst, "kube-api-burst", approver.DefaultKubeAPIBurst, "API client burst")
	f.IntVar(&o.workers, "workers", approver.DefaultWorkers, "CSRs reconciled in parallel")
	f.DurationVar(&o.accessCacheTTL, "access-review-cache-ttl", approver.DefaultAccessReviewCacheTTL, "how long an allowed SubjectAccessReview of a bootstrap requestor is reused for the same identity (user, UID, groups, extra); denials are never reused; 0 disables")
	f.DurationVar(&o.maxExpiration, "max-expiration", approver.DefaultMaxExpiration, "largest spec.expirationSeconds approved")
	f.StringVar(&o.bootstrapGroup, "bootstrap-group", identity.BootstrapGroup, "group of vnode bootstrap tokens (auth-extra-groups)")
	f.BoolVar(&o.deny, "deny", true, "deny CSRs that look like a virtual node's and fail a check; false only ignores them")
	f.BoolVar(&o.dryRun, "dry-run", false, "log each decision and change nothing")
	f.DurationVar(&o.resync, "resync", 10*time.Minute, "cache resync period (pending CSRs are re-decided)")
	f.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader with a Lease so only one replica approves")
	f.StringVar(&o.leaseNamespace, "leader-election-namespace", "vnode-system", "namespace of the leader Lease")
	f.StringVar(&o.leaseName, "leader-election-name", approver.Component, "name of the leader Lease")
	f.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "Lease duration")
	f.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader retries renewing before giving up")
	f.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew")
	o.meta.AddFlags(f, "127.0.0.1:8081")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func run(parent context.Context, o options) error {
	ctx, stop, logger, err := cli.Start(parent, o.logLevel)
	if err != nil {
		return err
	}
	defer stop()
	if o.workers < 1 {
		return errors.New("--workers must be at least 1")
	}
	if o.accessCacheTTL < 0 {
		return errors.New("--access-review-cache-ttl must not be negative")
	}
	if o.maxExpiration < 10*time.Minute {
		return errors.New("--max-expiration must be at least 10m (the API server's minimum expirationSeconds)")
	}

	restCfg, err := cli.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst

	meta, err := o.meta.Open()
	if err != nil {
		return err
	}
	return approver.Run(ctx, approver.Config{
		REST: restCfg,
		Options: approver.Options{
			Policy:               approver.Policy{MaxExpiration: o.maxExpiration, BootstrapGroup: o.bootstrapGroup},
			Workers:              o.workers,
			Deny:                 o.deny,
			DryRun:               o.dryRun,
			AccessReviewCacheTTL: cacheTTL(o.accessCacheTTL),
		},
		Resync:          o.resync,
		LeaderElect:     o.leaderElect,
		LeaseNamespace:  o.leaseNamespace,
		LeaseName:       o.leaseName,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		MetricsListener: meta.Metrics,
		MetricsCert:     meta.MetricsCert,
		MetricsClientCA: meta.MetricsClientCA,
		HealthListener:  meta.Health,
		Log:             logrus.NewEntry(logger),
	})
}

// cacheTTL maps the flag (0 disables) to Options (0 is the default,
// negative disables).
func cacheTTL(flag time.Duration) time.Duration {
	if flag == 0 {
		return -1
	}
	return flag
}
