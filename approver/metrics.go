package approver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics count decisions by reason and time reconciles.
type metrics struct {
	approved  *prometheus.CounterVec
	denied    *prometheus.CounterVec
	ignored   *prometheus.CounterVec
	dryRun    *prometheus.CounterVec
	errors    prometheus.Counter
	reconcile prometheus.Histogram
	// accessReviews counts access checks by whether the cache answered.
	accessReviews *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		approved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "approved_total",
			Help: "CSRs approved, by kind (bootstrap or renewal of a client certificate, or serving).",
		}, []string{"kind"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "denied_total",
			Help: "CSRs denied, by the check that failed.",
		}, []string{"reason"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "ignored_total",
			Help: "Reconciles that left a CSR alone, by reason (not-ours, already-decided, or deny-disabled:<check>).",
		}, []string{"reason"}),
		dryRun: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "dry_run_decisions_total",
			Help: "Decisions logged but not written because of --dry-run, by verdict and reason.",
		}, []string{"verdict", "reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "reconcile_errors_total",
			Help: "Reconciles that failed and were requeued with backoff.",
		}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vnode_approver", Name: "reconcile_duration_seconds",
			Help:    "Time to reconcile one CSR, including the SubjectAccessReview and the approval write.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		accessReviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vnode_approver", Name: "access_checks_total",
			Help: "Bootstrap requestors' access checks, by whether a cached allow answered (true) or a SubjectAccessReview was sent (false).",
		}, []string{"cached"}),
	}
	for _, c := range []prometheus.Collector{m.approved, m.denied, m.ignored, m.dryRun, m.errors, m.reconcile, m.accessReviews} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
