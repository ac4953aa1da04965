package provider

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/kubeletapi"
	"github.com/vnode-project/vnode/provider/translate"
)

// Annotations the provider writes on pods (Alibaba's names) and PVCs.
const (
	AnnotationInstanceID   = "k8s.aliyun.com/eci-instance-id"
	AnnotationInstanceSpec = "k8s.aliyun.com/eci-instance-spec"
	AnnotationInstanceCPU  = "k8s.aliyun.com/eci-instance-cpu"
	AnnotationInstanceMem  = "k8s.aliyun.com/eci-instance-mem"
	AnnotationInstanceZone = "k8s.aliyun.com/eci-instance-zone"
	AnnotationRequestID    = "k8s.aliyun.com/eci-request-id"
	AnnotationClientToken  = "k8s.aliyun.com/eci-client-token"
	AnnotationVKVersion    = "k8s.aliyun.com/vk-version"
	// AnnotationPVCUsedBy + "<instance id>" on a PVC names the pod whose
	// instance mounts it.
	AnnotationPVCUsedBy = "vnode.io/used-by."
)

// Event reasons the provider records on pods.
const (
	ReasonDaemonSet   = "DaemonSetPodNotSupported"
	ReasonCreated     = "ECIInstanceCreated"
	ReasonRetrying    = "ECICreateRetrying"
	ReasonVanished    = "ECIInstanceNotFound"
	ReasonECIRejected = "ECIRejected"
)

// Config configures the provider.
type Config struct {
	Node translate.NodeSettings
	// Version is written to pods as k8s.aliyun.com/vk-version.
	Version string
	// SyncInterval is how often the instances' status changes are polled
	// (default 5s).
	SyncInterval time.Duration
	// StartSyncInterval is how often they are polled while instances are
	// being created (see waitSync; default 1s).
	StartSyncInterval time.Duration
	// ListInterval is how often every instance's status is listed instead
	// (default six SyncIntervals; while instances are being created, see
	// listDue): the list finds instances gone (absent from two lists in a
	// row) and any change a poll missed.
	ListInterval time.Duration
	// GCInterval is how often every instance is listed in full (events
	// that came without a status change are replayed then) and orphaned
	// instances are collected (default 1m), beside the syncs, which list
	// statuses only and fetch the instances that changed; while instances
	// are being created, not before fullListMaxDelay; and never so often
	// that it takes more than a tenth of DescribeQuota (see fullDue).
	GCInterval time.Duration
	// DescribeQuota is the DescribeContainerGroups calls a minute this
	// node's ECI client keeps to (0: no limit known).
	DescribeQuota int
	// Workers is how many creates run at once, and how many deletes
	// (default 16 each: they have their own queues).
	Workers int
	// RetryBase and RetryMax bound the backoff of a failed create or
	// delete (default 1s doubling to 1m), per pod.
	RetryBase, RetryMax time.Duration
	// LogPollInterval is how often kubectl logs -f asks ECI for new lines
	// (default 1s).
	LogPollInterval time.Duration
	// StatsTTL is how long instance metrics are reused (default 10s).
	StatsTTL time.Duration
	// MissingObjectGrace is how long a pod waits for a configMap or secret
	// it needs before it is failed (default 2m).
	MissingObjectGrace time.Duration
	// Tokens mints the service-account tokens of projected volumes.
	Tokens TokenIssuer
	Log    logrus.FieldLogger
}

// Provider implements virtual-kubelet's PodLifecycleHandler and PodNotifier
// on ECI. Creates and deletes go through rate-limited workqueues of their
// own (creates, deletes), status changes reach virtual-kubelet through a
// third (notices), and a sync loop follows the instances; none of them
// calls out while holding mu.
type Provider struct {
	cfg      Config
	cloud    Cloud
	kube     kubernetes.Interface
	src      translate.Sources
	recorder record.EventRecorder
	log      logrus.FieldLogger
	stats    *kubeletapi.Stats

	// pods, when set, gives the API server's current metadata: pods the
	// provider hands to virtual-kubelet are written back through
	// pods/status, which keeps the body's labels and annotations.
	pods corev1listers.PodLister

	// creates holds pods whose instance is to be made, deletes pods whose
	// instance is to go; each pod is retried with its own exponential
	// backoff. They are apart, each with its own workers, so that a create
	// backlog waiting on ECI's create quota never holds up a delete: a
	// pod its user deleted leaves ECI before creates still queued.
	creates, deletes workqueue.TypedRateLimitingInterface[types.UID]
	// notices holds pods whose status virtual-kubelet has not been told;
	// one goroutine tells it the latest, in order.
	notices workqueue.TypedInterface[types.UID]

	// created wakes the sync loop after a create (one pending wake-up is
	// enough); lastCreate is when the last instance was created (Unix ns).
	created    chan struct{}
	lastCreate atomic.Int64

	// syncMu serializes syncs; digests (instance id -> status digest of
	// its last fetched details) and lastList (when the last status list
	// began) belong to it.
	syncMu   sync.Mutex
	digests  map[string]uint64
	lastList time.Time
	// fullMu serializes full lists; lastFull (when the last ended) and
	// lastFullCalls (how many pages it took) belong to it.
	fullMu        sync.Mutex
	lastFull      time.Time
	lastFullCalls int

	mu      sync.Mutex
	entries map[types.UID]*entry
	keys    map[string]types.UID // namespace/name -> uid
	notify  func(*corev1.Pod)
}

// New returns a provider. Call Recover before virtual-kubelet starts, then
// Run.
func New(cfg Config, cloud Cloud, kube kubernetes.Interface, src translate.Sources, recorder record.EventRecorder) *Provider {
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 5 * time.Second
	}
	if cfg.StartSyncInterval <= 0 || cfg.StartSyncInterval > cfg.SyncInterval {
		cfg.StartSyncInterval = min(time.Second, cfg.SyncInterval)
	}
	if cfg.ListInterval < cfg.SyncInterval {
		cfg.ListInterval = 6 * cfg.SyncInterval
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	if cfg.MissingObjectGrace <= 0 {
		cfg.MissingObjectGrace = 2 * time.Minute
	}
	p := &Provider{
		cfg: cfg, cloud: cloud, kube: kube, src: src, recorder: recorder,
		log:     cfg.Log.WithField("node", cfg.Node.NodeName),
		creates: newPodQueue(cfg, "vnode_pod_creates"),
		deletes: newPodQueue(cfg, "vnode_pod_deletes"),
		notices: workqueue.NewTyped[types.UID](),
		created: make(chan struct{}, 1),
		entries: map[types.UID]*entry{},
		keys:    map[string]types.UID{},
	}
	p.stats = &kubeletapi.Stats{NodeName: cfg.Node.NodeName, Source: cloud, Pods: p.runningPods, TTL: cfg.StatsTTL, Started: time.Now()}
	return p
}

// newPodQueue is a work queue of pods retried with per-pod exponential
// backoff.
func newPodQueue(cfg Config, name string) workqueue.TypedRateLimitingInterface[types.UID] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](cfg.RetryBase, cfg.RetryMax),
		workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: name})
}

// nodeTags select this node's instances, and only them.
func (p *Provider) nodeTags() map[string]string {
	return map[string]string{translate.TagCluster: p.cfg.Node.ClusterName, translate.TagNode: p.cfg.Node.NodeName}
}

// ownedBy double-checks an instance's tags client-side: a list filter bug
// must never let GC touch another node's or cluster's instance.
func (p *Provider) ownedBy(inst *model.Instance) bool {
	// Tags hold model.TagValue of a name (hashed when over ECI's 128
	// characters): compare like with like.
	return inst.Tags[translate.TagCluster] == model.TagValue(p.cfg.Node.ClusterName) &&
		inst.Tags[translate.TagNode] == model.TagValue(p.cfg.Node.NodeName) && inst.Tags[translate.TagPodUID] != ""
}

// NotifyPods implements node.PodNotifier.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

// Run runs the create and delete workers, tells virtual-kubelet of status
// changes, syncs, and beside the syncs takes the full list (collecting
// garbage) whenever it is due, until ctx ends.
func (p *Provider) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() {
			for p.processCreate(ctx) {
			}
		})
		wg.Go(func() {
			for p.processDelete(ctx) {
			}
		})
	}
	wg.Go(func() {
		for p.tellNext() {
		}
	})
	// The first sync reads every instance's details (it has no digests
	// yet): the first full list, for orphans and forgotten pods, comes
	// GCInterval after it, not at once with the same 500 calls at 10,000
	// pods.
	p.fullMu.Lock()
	p.lastFull = time.Now()
	p.fullMu.Unlock()
	wg.Go(func() { p.fullLists(ctx) })
	changes := false
	var lastWhole time.Time
	for {
		if err := p.sync(ctx, changes); err != nil && ctx.Err() == nil {
			p.log.WithError(err).Warn("sync with ECI failed; will retry")
		}
		if !changes {
			lastWhole = time.Now()
		}
		var ok bool
		if changes, ok = p.waitSync(ctx, p.listDue(lastWhole)); !ok {
			break
		}
	}
	p.creates.ShutDown()
	p.deletes.ShutDown()
	p.notices.ShutDown()
	wg.Wait()
}

// fullLists takes the full list whenever it is due (fullDue is asked every
// SyncInterval), until ctx ends. One that failed is tried again
// ListInterval later, as a whole status list would be.
func (p *Provider) fullLists(ctx context.Context) {
	wait := p.cfg.SyncInterval
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = p.cfg.SyncInterval
		if !p.fullDue() {
			continue
		}
		if err := p.fullList(ctx); err != nil && ctx.Err() == nil {
			p.log.WithError(err).Warn("full list of ECI instances failed; will retry")
			wait = p.cfg.ListInterval
		}
	}
}

// wholeListMaxDelay is how many ListIntervals a burst may put the whole
// status list off (see listDue).
const wholeListMaxDelay = 4

// listDue is when the whole status list is due, the last having ended at
// last: ListInterval after it, or, while instances are being created,
// wholeListMaxDelay ListIntervals after it. A whole list reads every
// instance's status (one call and about 180 KB of answer per 200
// instances), so over a burst its lists of the pods made so far add up to
// O(N²): at 10,000 pods, one every 30 s read most of the status the node
// decoded. The polls, every StartSyncInterval in a burst, carry its
// changes; what only a whole list finds (an instance gone, a change a
// poll missed) waits, in a burst, for a list wholeListMaxDelay
// ListIntervals apart (two minutes by default).
func (p *Provider) listDue(last time.Time) time.Time {
	if p.creating() {
		return last.Add(wholeListMaxDelay * p.cfg.ListInterval)
	}
	return last.Add(p.cfg.ListInterval)
}

// creating reports whether instances were created in the last two
// SyncIntervals: a burst, for which syncs come every StartSyncInterval.
func (p *Provider) creating() bool {
	return time.Since(time.Unix(0, p.lastCreate.Load())) < 2*p.cfg.SyncInterval
}

// waitSync waits until the next sync is due and says whether it is a poll
// of changes (sync with changes) or a whole status list (due at listDue); false
// once ctx ends. A poll is due every SyncInterval; StartSyncInterval
// after an instance was created, and every StartSyncInterval while
// instances were created in the last two SyncIntervals: a new instance's
// Running status (and its annotations) then reach the API server about a
// second after it starts, not up to SyncInterval later. In a burst the
// last pods' wait for the next sync was most of the time to all Running
// beyond ECI's create quota. A poll costs one call plus one per 20
// changed instances; a whole list one per 200 instances, which at 10,000
// pods every 5 s was most of the node's ECI calls and CPU when idle.
func (p *Provider) waitSync(ctx context.Context, listDue time.Time) (changes, ok bool) {
	d := min(p.cfg.SyncInterval, time.Until(listDue))
	if p.creating() {
		d = min(d, p.cfg.StartSyncInterval)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return time.Now().Before(listDue), true
	case <-p.created:
		t.Reset(min(p.cfg.StartSyncInterval, time.Until(listDue)))
	}
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return time.Now().Before(listDue), true
	}
}

// createdInstance notes that an instance was just created: waitSync makes
// the next sync come soon.
func (p *Provider) createdInstance() {
	p.lastCreate.Store(time.Now().UnixNano())
	select {
	case p.created <- struct{}{}:
	default:
	}
}

// SetPodLister makes the provider report pods with their current metadata.
func (p *Provider) SetPodLister(l corev1listers.PodLister) { p.pods = l }

// changed queues e's pod for virtual-kubelet to hear its status; mu is held.
func (p *Provider) changed(e *entry) { p.notices.Add(e.pod.UID) }

// tellNext tells virtual-kubelet the latest status of one changed pod. It
// returns false once the queue is shut down.
func (p *Provider) tellNext() bool {
	uid, quit := p.notices.Get()
	if quit {
		return false
	}
	defer p.notices.Done(uid)
	p.mu.Lock()
	e, notify := p.entries[uid], p.notify
	var snap *corev1.Pod
	deleted := false
	if e != nil {
		// The status and metadata, no containers: pods/status keeps the
		// stored spec, and virtual-kubelet keeps a copy of each report.
		snap = &corev1.Pod{ObjectMeta: *e.pod.ObjectMeta.DeepCopy(), Spec: corev1.PodSpec{NodeName: e.pod.nodeName}, Status: *e.pod.Status.DeepCopy()}
		deleted = e.phase == phaseDeleted
	}
	p.mu.Unlock()
	if snap == nil || notify == nil || (deleted && p.goneFromAPI(snap)) {
		return true
	}
	notify(p.reported(snap))
	return true
}

// goneFromAPI reports whether the API server no longer has pod (as its
// informer last saw). A deleted pod's final status is then news to no one,
// and virtual-kubelet, which would drop it, first waits about 200 ms on
// its informer for a pod it does not know: one such wait per pod, in this
// one goroutine, held every later status behind a mass delete.
func (p *Provider) goneFromAPI(pod *corev1.Pod) bool {
	if p.pods == nil {
		return false
	}
	l, err := p.pods.Pods(pod.Namespace).Get(pod.Name)
	return apierrors.IsNotFound(err) || (err == nil && l.UID != pod.UID)
}

// ownAnnotations are the annotations the provider writes (see annotate).
var ownAnnotations = []string{AnnotationInstanceID, AnnotationInstanceSpec, AnnotationInstanceCPU, AnnotationInstanceMem,
	AnnotationInstanceZone, AnnotationRequestID, AnnotationClientToken, AnnotationVKVersion}

// OwnAnnotations returns the annotations the provider writes on its pods.
// They are its output, never its input: the node's informers may drop them.
func OwnAnnotations() []string { return slices.Clone(ownAnnotations) }

// keepOwn sets on m the provider's own annotations that from has.
func keepOwn(m *metav1.ObjectMeta, from map[string]string) {
	for _, k := range ownAnnotations {
		if v := from[k]; v != "" {
			metav1.SetMetaDataAnnotation(m, k, v)
		}
	}
}

// listed returns the informer's copy of pod, or nil (no lister, or no pod
// of that name and UID); it must not be changed.
func (p *Provider) listed(pod *corev1.Pod) *corev1.Pod {
	if p.pods == nil {
		return nil
	}
	l, err := p.pods.Pods(pod.Namespace).Get(pod.Name)
	if err != nil || l.UID != pod.UID {
		return nil
	}
	return l
}

// reported is what virtual-kubelet is told of a pod and writes through
// pods/status: snap (a copy of an entry's podRecord) with the API server's
// latest metadata as the informer has it and, over it, the provider's own
// annotations: this write is how they reach the API server (see annotate).
// Owners are left out: pods/status keeps the stored ones.
func (p *Provider) reported(snap *corev1.Pod) *corev1.Pod {
	own := snap.Annotations
	if l := p.listed(snap); l != nil {
		snap.ObjectMeta = *l.ObjectMeta.DeepCopy()
		snap.ManagedFields = nil
	}
	snap.OwnerReferences = nil
	keepOwn(&snap.ObjectMeta, own)
	return snap
}

// UpdatePod implements node.PodLifecycleHandler. ECI cannot change a running
// instance's containers; metadata changes are kept for status reports.
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[pod.UID]; ok {
		r := newPodRecord(pod, p.pods == nil)
		r.Status = e.pod.Status
		keepOwn(&r.ObjectMeta, e.pod.Annotations)
		e.pod = r
		if e.full != nil {
			e.full = slim(pod)
		}
	}
	return nil
}

// GetPod implements node.PodLifecycleHandler: the pod as the informer has
// it, whole, with the provider's status. virtual-kubelet compares it with
// its informer's copy to tell whether the pod changed, so the provider's
// own annotations, which that informer does not show, are left out.
// Without an informer: the skeleton's metadata and the pod's whole spec.
func (p *Provider) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	uid, ok := p.keys[key(ns, name)]
	if !ok {
		p.mu.Unlock()
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	e := p.entries[uid]
	snap := e.pod.pod()
	if e.full != nil {
		snap.Spec = *e.full.Spec.DeepCopy()
	}
	p.mu.Unlock()
	if l := p.listed(snap); l != nil {
		out := l.DeepCopy()
		out.ManagedFields = nil
		out.Status = snap.Status
		return out, nil
	}
	return snap, nil
}

// GetPodStatus implements node.PodLifecycleHandler.
func (p *Provider) GetPodStatus(ctx context.Context, ns, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods implements node.PodLifecycleHandler: every pod with an instance or
// a creation call in flight, including adopted ones (virtual-kubelet deletes
// those whose API object is gone). It also answers the kubelet API's
// /runningpods/, so a pod that runs nothing (refused, or waiting between
// attempts for a secret it needs) is not listed; it holds no instance.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.entries))
	for _, e := range p.entries {
		if e.listed() {
			out = append(out, e.pod.pod())
		}
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].Namespace, out[i].Name) < key(out[j].Namespace, out[j].Name) })
	return out, nil
}

// Instance returns the instance id of a pod, for the kubelet API.
func (p *Provider) Instance(ns, name string) (id string, pod *corev1.Pod, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	uid, ok := p.keys[key(ns, name)]
	if !ok {
		return "", nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	e := p.entries[uid]
	if e.instanceID == "" {
		return "", nil, errdefs.NotFoundf("pod %s/%s has no ECI instance yet", ns, name)
	}
	return e.instanceID, e.pod.pod(), nil
}

// event records an event on pod; record's broadcaster queues it, so this
// never blocks on the API server.
func (p *Provider) event(pod *corev1.Pod, typ, reason, msg string) {
	if p.recorder != nil {
		p.recorder.Event(pod, typ, reason, msg)
	}
}

// moveTo moves e to next, logging a move the lifecycle forbids (a bug)
// instead of making it; mu is held.
func (p *Provider) moveTo(e *entry, next phase) bool {
	if e.to(next) {
		return true
	}
	p.log.WithFields(logrus.Fields{"namespace": e.pod.Namespace, "pod": e.pod.Name, "from": e.phase, "to": next}).
		Error("refused a pod lifecycle move the provider does not allow")
	return false
}
