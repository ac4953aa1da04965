package approver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	certinformers "k8s.io/client-go/informers/certificates/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Options configure a Controller.
type Options struct {
	Policy Policy
	// Workers reconcile in parallel (default DefaultWorkers).
	Workers int
	// Deny writes Denied for ours-but-failing CSRs; false only ignores them.
	Deny bool
	// DryRun logs each decision and writes nothing.
	DryRun bool
	// Recorder receives an event per approval and denial.
	Recorder record.EventRecorder
	// Registry gets the controller's metrics.
	Registry prometheus.Registerer
	Log      logrus.FieldLogger
	// Now defaults to time.Now (bootstrap token expiry).
	Now func() time.Time
	// AccessReviewCacheTTL is how long an allowed SubjectAccessReview is
	// reused for the same requestor identity (see CachedReviewer): 0 means
	// DefaultAccessReviewCacheTTL, negative turns the cache off.
	AccessReviewCacheTTL time.Duration
}

// DefaultWorkers is how many CSRs are reconciled in parallel by default:
// each mostly waits for its approval write, so the approval rate is about
// workers over the write's latency (5 workers reached 510 CSRs/s on two
// cores under a 1,000-CSR burst, 16 reached 570/s; see BENCHMARKS.md).
const DefaultWorkers = 16

// Controller approves virtual nodes' CSRs (see the package doc).
type Controller struct {
	client  kubernetes.Interface
	csrs    certlisters.CertificateSigningRequestLister
	synced  []cache.InformerSynced
	facts   Facts
	queue   workqueue.TypedRateLimitingInterface[Key]
	opts    Options
	metrics *metrics
	log     logrus.FieldLogger
}

// NewController wires a controller to its informers: CSRs (ideally filtered
// with ListOptions), bootstrap token
// Secrets in kube-system, and Nodes (full or metadata-only).
func NewController(client kubernetes.Interface, csrs certinformers.CertificateSigningRequestInformer, tokens coreinformers.SecretInformer, nodes cache.SharedIndexInformer, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Log == nil {
		opts.Log = logrus.New()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Recorder == nil {
		return nil, errors.New("approver: Options.Recorder is required")
	}
	if opts.Registry == nil {
		return nil, errors.New("approver: Options.Registry is required")
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("registering approver metrics: %w", err)
	}
	var access AccessReviewer = SARReviewer{Client: client}
	if ttl := opts.AccessReviewCacheTTL; ttl >= 0 {
		if ttl == 0 {
			ttl = DefaultAccessReviewCacheTTL
		}
		access = &CachedReviewer{Reviewer: access, TTL: ttl, Observe: func(cached bool) {
			m.accessReviews.WithLabelValues(strconv.FormatBool(cached)).Inc()
		}}
	}
	c := &Controller{
		client: client,
		csrs:   csrs.Lister(),
		synced: []cache.InformerSynced{csrs.Informer().HasSynced, tokens.Informer().HasSynced, nodes.HasSynced},
		facts: Facts{
			Access:     access,
			Secrets:    SecretLister{Lister: tokens.Lister(), Client: client},
			Nodes:      NodeIndexer{Store: nodes.GetStore()},
			Registered: NodeLister{Client: client},
		},
		queue:   newQueue(),
		opts:    opts,
		metrics: m,
		log:     opts.Log,
	}
	_, err = csrs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj interface{}) { c.enqueue(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding CSR event handler: %w", err)
	}
	return c, nil
}

// newQueue is a rate-limited workqueue that is fair between requestors,
// with kube-controller-manager's limiter for retries.
func newQueue() workqueue.TypedRateLimitingInterface[Key] {
	limiter := workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[Key](200*time.Millisecond, 1000*time.Second),
		&workqueue.TypedBucketRateLimiter[Key]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
	fifo := workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[Key]{Queue: newFairQueue()})
	return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[Key]{
		DelayingQueue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[Key]{Queue: fifo}),
	})
}

// ListOptions leaves out of the CSR informer the signer with the most CSRs
// in a cluster and none of vnode's, kubelets' client certificates (use with
// informers.WithTweakListOptions). A field selector cannot name the two
// signers the controller handles; the rest are ignored at once.
func ListOptions(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermNotEqualSelector("spec.signerName", certificatesv1.KubeAPIServerClientKubeletSignerName).String()
}

// TokenListOptions narrows the kube-system Secret informer to bootstrap
// tokens.
func TokenListOptions(o *metav1.ListOptions) {
	o.FieldSelector = "type=" + string(corev1.SecretTypeBootstrapToken)
}

func (c *Controller) enqueue(obj interface{}) {
	csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok || Decided(csr) {
		return
	}
	c.queue.Add(Key{Requestor: csr.Spec.Username, Name: csr.Name})
}

// Run waits for the caches, then reconciles with Options.Workers workers
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.log.WithField("workers", c.opts.Workers).Info("starting vnode CSR approver")
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return errors.New("waiting for the CSR, Secret and Node caches to sync")
	}
	for i := 0; i < c.opts.Workers; i++ {
		go wait.UntilWithContext(ctx, c.runWorker, time.Second)
	}
	c.log.Info("vnode CSR approver started")
	<-ctx.Done()
	c.log.Info("stopping vnode CSR approver")
	return nil
}

// Synced reports whether every cache has synced (for /readyz).
func (c *Controller) Synced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextItem(ctx) {
	}
}

func (c *Controller) processNextItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if err := c.Reconcile(ctx, key.Name); err != nil {
		c.metrics.errors.Inc()
		c.log.WithFields(logrus.Fields{"csr": key.Name, "requestor": key.Requestor}).WithError(err).Warn("reconciling CSR; will retry")
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// Reconcile decides on the CSR called name and writes the decision. It can
// run any number of times: a decided CSR is left alone, and the write
// re-reads the CSR on conflict so it never adds a second condition.
func (c *Controller) Reconcile(ctx context.Context, name string) error {
	start := time.Now()
	defer func() { c.metrics.reconcile.Observe(time.Since(start).Seconds()) }()
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading CSR %s from the cache: %w", name, err)
	}
	facts := c.facts
	facts.Now = c.opts.Now()
	d := c.opts.Policy.Evaluate(ctx, csr, facts)
	log := c.log.WithFields(logrus.Fields{"csr": csr.Name, "requestor": csr.Spec.Username, "signer": csr.Spec.SignerName})

	var cond certificatesv1.CertificateSigningRequestCondition
	switch d.Verdict {
	case Ignore:
		c.metrics.ignored.WithLabelValues(d.IgnoreReason).Inc()
		log.WithFields(logrus.Fields{"reason": d.IgnoreReason, "detail": d.Message}).Debug("ignoring CSR")
		return nil
	case Retry:
		return fmt.Errorf("deciding on CSR %s: %w", csr.Name, d.Err)
	case Deny:
		log = log.WithFields(logrus.Fields{"check": d.Check, "detail": d.Message})
		if !c.opts.Deny {
			c.metrics.ignored.WithLabelValues(IgnoreDenyDisabled + ":" + string(d.Check)).Inc()
			log.Info("CSR fails a check; denial is off, leaving it pending")
			return nil
		}
		cond = condition(certificatesv1.CertificateDenied, d.Check.ConditionReason(), d.Message)
	case Approve:
		cond = condition(certificatesv1.CertificateApproved, "AutoApproved", d.Message)
	}
	if c.opts.DryRun {
		c.metrics.dryRun.WithLabelValues(d.Verdict.String(), string(d.Check)).Inc()
		log.WithField("verdict", d.Verdict.String()).Info("dry run: would write this decision")
		return nil
	}
	written, err := c.writeCondition(ctx, csr, cond)
	if err != nil {
		return err
	}
	if !written {
		return nil
	}
	if d.Verdict == Approve {
		kind := "renewal"
		switch {
		case d.Serving:
			kind = "serving"
		case d.Bootstrap:
			kind = "bootstrap"
		}
		c.metrics.approved.WithLabelValues(kind).Inc()
		// No event: the Approved condition already carries the reason and
		// message, and an event per approval doubled the API writes of a
		// burst. Denials, which an admin must see, get one.
		log.WithField("kind", kind).Info("approved CSR")
		return nil
	}
	c.metrics.denied.WithLabelValues(string(d.Check)).Inc()
	c.opts.Recorder.Event(csr, corev1.EventTypeWarning, "Denied", fmt.Sprintf("%s: %s", d.Check, d.Message))
	log.Info("denied CSR")
	return nil
}

func condition(t certificatesv1.RequestConditionType, reason, msg string) certificatesv1.CertificateSigningRequestCondition {
	now := metav1.Now()
	return certificatesv1.CertificateSigningRequestCondition{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: msg,
		LastUpdateTime: now, LastTransitionTime: now,
	}
}

var errRecreated = errors.New("the CSR was deleted and recreated under the same name while being decided")

// writeCondition appends cond with UpdateApproval. The first attempt uses
// the cached copy; on a conflict it re-reads the CSR and stops if someone
// decided it meanwhile. It reports whether this call wrote the condition.
func (c *Controller) writeCondition(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, cond certificatesv1.CertificateSigningRequestCondition) (bool, error) {
	api := c.client.CertificatesV1().CertificateSigningRequests()
	cur := csr.DeepCopy()
	written := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if Decided(cur) {
			return nil
		}
		if cur.UID != csr.UID {
			return errRecreated
		}
		next := cur.DeepCopy()
		next.Status.Conditions = append(next.Status.Conditions, cond)
		_, err := api.UpdateApproval(ctx, next.Name, next, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			fresh, gerr := api.Get(ctx, csr.Name, metav1.GetOptions{})
			if gerr != nil {
				return fmt.Errorf("re-reading CSR %s after a conflict: %w", csr.Name, gerr)
			}
			cur = fresh
			return err
		}
		if err == nil {
			written = true
		}
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("writing %s condition on CSR %s: %w", cond.Type, csr.Name, err)
	}
	return written, nil
}
