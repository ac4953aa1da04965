package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

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

// missingObject are refusals that may resolve by themselves.
var missingObject = map[string]bool{"MissingConfigMap": true, "MissingSecret": true, "MissingConfigMapKey": true, "MissingSecretKey": true, "MissingVolumeKey": true}

// Config configures the provider.
type Config struct {
	Node translate.NodeSettings
	// Version is written to pods as k8s.aliyun.com/vk-version.
	Version string
	// SyncInterval is how often the instances are listed (default 5s).
	SyncInterval time.Duration
	// GCInterval is how often every instance is listed in full (events
	// that came without a status change are replayed then) and orphaned
	// instances are collected (default 1m). Between full lists a sync
	// lists statuses only and fetches the instances that changed.
	GCInterval time.Duration
	// LogPollInterval is how often kubectl logs -f asks ECI for new lines
	// (default 1s).
	LogPollInterval time.Duration
	// StatsTTL is how long instance metrics are reused (default 10s).
	StatsTTL time.Duration
	// MissingObjectGrace is how long a pod waits for a configMap or secret
	// it needs before it is failed (default 2m).
	MissingObjectGrace time.Duration
	Log                logrus.FieldLogger
}

// Provider implements virtual-kubelet's PodLifecycleHandler and PodNotifier
// on ECI.
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

	// syncMu serializes Sync; digests (instance id -> status digest of
	// its last fetched details) and lastFull belong to it.
	syncMu   sync.Mutex
	digests  map[string]uint64
	lastFull time.Time

	mu      sync.Mutex
	entries map[types.UID]*entry
	keys    map[string]types.UID // namespace/name -> uid
	notify  func(*corev1.Pod)
}

// entry is what the provider knows of one pod.
type entry struct {
	// pod is the pod's skeleton (see skeleton) with the status last
	// reported: what the provider reads once the instance exists.
	pod *corev1.Pod
	// full is the pod as given, kept only until its instance exists or it
	// is refused: create translates it, retries included.
	full       *corev1.Pod
	instanceID string
	requestID  string
	// pending: the create has not succeeded yet and is retried.
	pending bool
	// creating: a create call is in flight; nothing starts another (a
	// second call would carry a fresh service-account token, and ECI
	// refuses the reused ClientToken with IdempotentParameterMismatch).
	creating    bool
	nextAttempt time.Time
	attempts    int
	deleted     bool
	deleting    bool // DeletePod is deleting the instance
	// deletedID is the instance DeletePod deleted: virtual-kubelet calls
	// DeletePod again once the pod object is gone, and a second
	// DeleteContainerGroup would only spend the create/delete quota.
	deletedID    string
	final        bool // status will not change any more (failed/unsupported)
	annotated    bool // the size/zone annotations were written
	missed       int  // consecutive lists the instance was absent from
	seenEvents   map[string]int32
	claimsMarked []string        // PVC names annotated with this instance
	noted        map[string]bool // translation notes already sent as events
}

// New returns a provider. Call Recover before virtual-kubelet starts, then
// Run.
func New(cfg Config, cloud Cloud, kube kubernetes.Interface, src translate.Sources, recorder record.EventRecorder) *Provider {
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 5 * time.Second
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = time.Minute
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
		entries: map[types.UID]*entry{},
		keys:    map[string]types.UID{},
	}
	p.stats = &kubeletapi.Stats{NodeName: cfg.Node.NodeName, Source: cloud, Pods: p.runningPods, TTL: cfg.StatsTTL}
	return p
}

func key(ns, name string) string { return ns + "/" + name }

// nodeTags select this node's instances, and only them.
func (p *Provider) nodeTags() map[string]string {
	return map[string]string{translate.TagCluster: p.cfg.Node.ClusterName, translate.TagNode: p.cfg.Node.NodeName}
}

// ownedBy double-checks an instance's tags client-side: a list filter bug
// must never let GC touch another node's or cluster's instance.
func (p *Provider) ownedBy(inst *model.Instance) bool {
	return inst.Tags[translate.TagCluster] == p.cfg.Node.ClusterName && inst.Tags[translate.TagNode] == p.cfg.Node.NodeName && inst.Tags[translate.TagPodUID] != ""
}

// Recover rebuilds the cache from the cloud and the API server after a
// restart: every instance of this node whose pod still exists is adopted,
// so CreatePod will not create it again.
func (p *Provider) Recover(ctx context.Context) error {
	insts, err := p.cloud.ListContainerGroups(ctx, p.nodeTags())
	if err != nil {
		return fmt.Errorf("listing this node's instances: %w", err)
	}
	adopted := 0
	for _, inst := range insts {
		if !p.ownedBy(inst) {
			continue
		}
		ns, name, uid := inst.Tags[translate.TagNamespace], inst.Tags[translate.TagPod], types.UID(inst.Tags[translate.TagPodUID])
		pod, err := p.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && pod.UID != uid) {
			continue // an orphan: GC deletes it
		}
		if err != nil {
			return fmt.Errorf("reading pod %s/%s of instance %s: %w", ns, name, inst.ID, err)
		}
		e := &entry{pod: skeleton(pod), instanceID: inst.ID, seenEvents: map[string]int32{}}
		e.annotated = pod.Annotations[AnnotationInstanceSpec] != ""
		for _, ev := range inst.Events {
			e.seenEvents[eventKey(ev)] = ev.Count // replayed events are not news
		}
		// Keep the status the API server has: the first sync reports any
		// difference (a status computed here would look unchanged).
		p.mu.Lock()
		p.entries[uid] = e
		p.keys[key(ns, name)] = uid
		p.mu.Unlock()
		adopted++
		if pod.Annotations[AnnotationInstanceID] != inst.ID {
			// Created just before a crash, never annotated.
			p.annotate(ctx, e, map[string]string{
				AnnotationInstanceID:  inst.ID,
				AnnotationClientToken: translate.ClientToken(pod),
				AnnotationVKVersion:   p.cfg.Version,
			})
		}
	}
	p.log.WithField("instances", len(insts)).WithField("adopted", adopted).Info("recovered state from ECI")
	return nil
}

// NotifyPods implements node.PodNotifier.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

// Run syncs, and collects garbage after each full list, until ctx ends.
func (p *Provider) Run(ctx context.Context) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.log.WithError(err).Warn("sync with ECI failed; will retry")
		}
	}, p.cfg.SyncInterval)
}

// SetPodLister makes the provider report pods with their current metadata.
func (p *Provider) SetPodLister(l corev1listers.PodLister) { p.pods = l }

// ownAnnotations are the annotations the provider writes.
var ownAnnotations = []string{AnnotationInstanceID, AnnotationInstanceSpec, AnnotationInstanceCPU, AnnotationInstanceMem,
	AnnotationInstanceZone, AnnotationRequestID, AnnotationClientToken, AnnotationVKVersion}

// current is a copy of e's pod skeleton with the API server's latest
// metadata and, over it, the annotations the provider wrote (the informer
// may not have seen them yet; a pods/status write of older metadata would
// erase them). With withSpec, it carries the pod's whole spec.
func (p *Provider) current(e *entry, withSpec bool) *corev1.Pod {
	out := e.pod.DeepCopy()
	var lp *corev1.Pod
	if p.pods != nil {
		if l, err := p.pods.Pods(out.Namespace).Get(out.Name); err == nil && l.UID == out.UID {
			lp = l
			out.ObjectMeta = *lp.ObjectMeta.DeepCopy()
			out.ManagedFields = nil
		}
	}
	switch {
	case !withSpec:
	case lp != nil:
		out.Spec = *lp.Spec.DeepCopy()
	case e.full != nil:
		out.Spec = *e.full.Spec.DeepCopy()
	}
	for _, k := range ownAnnotations {
		if v := e.pod.Annotations[k]; v != "" {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out
}

// slim is a copy of pod without its managedFields: nothing here reads
// them, and at 10,000 pods the copies the provider holds and hands to
// virtual-kubelet would carry megabytes of them.
func slim(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	out.ManagedFields = nil
	return out
}

// skeleton is what the provider keeps of a pod once its instance exists:
// metadata, status, the restart policy, each container's name and image
// (statuses are built from them) and the claims it mounts. Pods reported
// to virtual-kubelet are skeletons too: it keeps a copy of each and
// writes it through pods/status, where the API server keeps the stored
// spec. A whole spec per pod, held twice more, was most of the provider's
// memory at 10,000 pods.
func skeleton(pod *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: pod.TypeMeta, ObjectMeta: *pod.ObjectMeta.DeepCopy(), Status: *pod.Status.DeepCopy()}
	out.ManagedFields = nil
	out.Spec.NodeName = pod.Spec.NodeName
	out.Spec.RestartPolicy = pod.Spec.RestartPolicy
	names := func(cs []corev1.Container) []corev1.Container {
		if len(cs) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image}
		}
		return out
	}
	out.Spec.InitContainers = names(pod.Spec.InitContainers)
	out.Spec.Containers = names(pod.Spec.Containers)
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim.DeepCopy()}})
		}
	}
	return out
}

func (p *Provider) emit(e *entry) {
	if p.notify != nil {
		p.notify(p.current(e, false))
	}
}

// CreatePod implements node.PodLifecycleHandler.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	log := p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name})
	p.mu.Lock()
	if e, ok := p.entries[pod.UID]; ok && (e.instanceID != "" || e.pending || e.final) {
		p.mu.Unlock()
		return nil // known: created, being created, or refused
	}
	e := &entry{pod: skeleton(pod), full: slim(pod), seenEvents: map[string]int32{}}
	e.pod.Status = pendingStatus(pod, "ContainerCreating")
	p.entries[pod.UID] = e
	p.keys[key(pod.Namespace, pod.Name)] = pod.UID
	p.mu.Unlock()

	if translate.IsDaemonSetPod(pod) {
		// A node agent has nothing to run on an ECI instance. Staying
		// Pending (not Failed) keeps the DaemonSet controller from
		// recreating it in a loop.
		msg := "DaemonSet pods do not run on virtual nodes; exclude the node with nodeAffinity type NotIn [virtual-kubelet]"
		p.mu.Lock()
		e.final, e.full = true, nil
		e.pod.Status = pendingStatus(pod, ReasonDaemonSet)
		e.pod.Status.Reason, e.pod.Status.Message = ReasonDaemonSet, msg
		p.emit(e)
		p.mu.Unlock()
		p.event(pod, corev1.EventTypeWarning, ReasonDaemonSet, msg)
		log.Info("not running a DaemonSet pod on the virtual node")
		return nil
	}
	p.create(ctx, e)
	return nil
}

// create translates and creates e's instance; failures either fail the pod
// (unsupported or refused) or leave it pending for the sync loop to retry.
func (p *Provider) create(ctx context.Context, e *entry) {
	p.mu.Lock()
	if e.creating || e.instanceID != "" || e.final || e.deleted || e.full == nil {
		p.mu.Unlock()
		return
	}
	pod := e.full.DeepCopy()
	e.pending, e.creating = true, true
	e.attempts++
	p.mu.Unlock()
	var notes [][2]string
	defer func() {
		p.mu.Lock()
		e.creating = false
		// Each once, not at every retry while a mandatory object is
		// awaited; an attempt may stop before env (at a volume whose
		// object is not there yet), so a later one may note more.
		var fresh [][2]string
		for _, n := range notes {
			if k := n[0] + "\x00" + n[1]; !e.noted[k] {
				if e.noted == nil {
					e.noted = map[string]bool{}
				}
				e.noted[k] = true
				fresh = append(fresh, n)
			}
		}
		p.mu.Unlock()
		// After creating is cleared, so whoever acts on the event finds
		// the provider settled.
		for _, n := range fresh {
			p.event(pod, corev1.EventTypeWarning, n[0], n[1])
		}
	}()
	log := p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name})

	src := p.src
	src.Note = func(reason, msg string) { notes = append(notes, [2]string{reason, msg}) }
	g, err := translate.Pod(ctx, pod, p.cfg.Node, src)
	if err != nil {
		u, ok := translate.AsUnsupported(err)
		// A referenced object may be about to appear (kube-root-ca.crt is
		// published into new namespaces a moment later, informers lag):
		// wait for it like the kubelet does, then give up.
		if ok && missingObject[u.Reason] && time.Since(pod.CreationTimestamp.Time) < p.cfg.MissingObjectGrace {
			p.retryLater(e, err, log)
			return
		}
		if ok {
			p.fail(e, u.Reason, u.Message)
			log.WithField("reason", u.Reason).Warn("pod cannot run on ECI")
			return
		}
		p.retryLater(e, err, log)
		return
	}
	id, reqID, err := p.cloud.CreateContainerGroup(ctx, g)
	if err != nil {
		p.mu.Lock()
		adopted := e.instanceID != ""
		p.mu.Unlock()
		if adopted {
			return // the sync loop found the instance an earlier call made
		}
		if errdefs.IsInvalidInput(err) {
			p.fail(e, ReasonECIRejected, "ECI refused the instance: "+err.Error())
			log.WithError(err).Warn("ECI refused the instance")
			return
		}
		p.retryLater(e, err, log)
		return
	}
	p.mu.Lock()
	adopted := e.instanceID != ""
	e.instanceID, e.requestID, e.pending, e.full = id, reqID, false, nil
	p.mu.Unlock()
	if adopted {
		return
	}
	log.WithField("instanceId", id).Info("created ECI instance")
	p.event(pod, corev1.EventTypeNormal, ReasonCreated, "created ECI instance "+id)
	p.annotate(ctx, e, map[string]string{
		AnnotationInstanceID:  id,
		AnnotationRequestID:   reqID,
		AnnotationClientToken: g.ClientToken,
		AnnotationVKVersion:   p.cfg.Version,
	})
	p.markClaims(ctx, e, pod, id)
}

func (p *Provider) retryLater(e *entry, err error, log logrus.FieldLogger) {
	p.mu.Lock()
	// Exponential backoff from 1 s to 1 min between attempts.
	delay := time.Second << min(e.attempts-1, 6)
	e.nextAttempt = time.Now().Add(delay)
	first := e.attempts == 1
	pod := e.pod
	p.mu.Unlock()
	log.WithError(err).WithField("retryIn", delay).Warn("creating the ECI instance failed; retrying")
	if first {
		p.event(pod, corev1.EventTypeWarning, ReasonRetrying, "cannot create the ECI instance yet, retrying: "+err.Error())
	}
}

func (p *Provider) fail(e *entry, reason, msg string) {
	p.mu.Lock()
	e.pending, e.final, e.full = false, true, nil
	st := pendingStatus(e.pod, reason)
	st.Phase, st.Reason, st.Message = corev1.PodFailed, reason, msg
	for i := range st.ContainerStatuses {
		st.ContainerStatuses[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: reason, Message: msg}}
	}
	e.pod.Status = st
	pod := e.pod
	p.emit(e)
	p.mu.Unlock()
	p.event(pod, corev1.EventTypeWarning, reason, msg)
}

// UpdatePod implements node.PodLifecycleHandler. ECI cannot change a running
// instance's containers; metadata changes are kept for status reports.
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[pod.UID]; ok {
		status, old := e.pod.Status, e.pod.Annotations
		e.pod = skeleton(pod)
		e.pod.Status = status
		if e.full != nil {
			e.full = slim(pod)
		}
		for _, k := range ownAnnotations {
			if v := old[k]; v != "" {
				if e.pod.Annotations == nil {
					e.pod.Annotations = map[string]string{}
				}
				e.pod.Annotations[k] = v
			}
		}
	}
	return nil
}

// DeletePod implements node.PodLifecycleHandler: it deletes the instance and
// reports the pod terminated. It may be called more than once.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	log := p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name})
	p.mu.Lock()
	e, ok := p.entries[pod.UID]
	if !ok {
		p.mu.Unlock()
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	id := e.instanceID
	// An instance a create in flight made after an earlier delete has
	// another id, and is still deleted.
	again := id != "" && id == e.deletedID
	// Terminating from now on: /runningpods stops listing it while the
	// cloud call is under way (and lists it again if that call fails).
	e.deleting = true
	p.mu.Unlock()
	if id != "" && !again {
		if err := p.cloud.DeleteContainerGroup(ctx, id); err != nil && !errdefs.IsNotFound(err) {
			p.mu.Lock()
			e.deleting = false
			p.mu.Unlock()
			return fmt.Errorf("deleting ECI instance %s of %s/%s: %w", id, pod.Namespace, pod.Name, err)
		}
		log.WithField("instanceId", id).Info("deleted ECI instance")
		p.unmarkClaims(ctx, e, pod, id)
	}
	p.mu.Lock()
	e.deleted, e.pending, e.full = true, false, nil
	if id != "" {
		e.deletedID = id
	}
	e.pod.Status = terminatedStatus(e.pod)
	p.emit(e)
	p.mu.Unlock()
	return nil
}

// GetPod implements node.PodLifecycleHandler.
func (p *Provider) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	uid, ok := p.keys[key(ns, name)]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return p.current(p.entries[uid], true), nil
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
		if !e.deleted && !e.deleting && (e.instanceID != "" || e.creating) {
			out = append(out, e.pod.DeepCopy())
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
	return e.instanceID, e.pod.DeepCopy(), nil
}

// Sync lists this node's instances' statuses once, fetches the details of
// those that changed (of all, every GCInterval, then collects garbage),
// updates every pod's status, replays ECI events, writes annotations and
// retries pending creates. The status list costs one call per 200
// instances, so a sync's cost follows what changed, not how many pods run.
func (p *Provider) Sync(ctx context.Context) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	tags := p.nodeTags()
	// Statuses first: details fetched after them are at least as new.
	statuses, err := p.cloud.ListStatuses(ctx, tags)
	if err != nil {
		// Never taken as "all instances gone": statuses stay as they were.
		return fmt.Errorf("listing this node's instance statuses: %w", err)
	}
	full := p.lastFull.IsZero() || time.Since(p.lastFull) >= p.cfg.GCInterval
	var insts []*model.Instance
	if full {
		insts, err = p.cloud.ListContainerGroups(ctx, tags)
	} else {
		var changed []string
		for _, st := range statuses {
			if d, ok := p.digests[st.ID]; !ok || d != st.Digest {
				changed = append(changed, st.ID)
			}
		}
		insts, err = p.cloud.GetContainerGroups(ctx, changed)
	}
	if err != nil {
		return fmt.Errorf("reading this node's instances: %w", err)
	}
	p.digests = make(map[string]uint64, len(statuses))
	present := make(map[string]bool, len(statuses))
	for _, st := range statuses {
		p.digests[st.ID] = st.Digest
		present[st.ID] = true
	}
	if full {
		p.lastFull = time.Now()
		for _, inst := range insts {
			present[inst.ID] = true // created after the status list
		}
	}
	p.apply(ctx, present, insts)
	if full {
		p.collect(ctx, insts)
	}
	return nil
}

// apply takes in what a sync learnt: present holds every instance of this
// node, insts the details of those that changed.
func (p *Provider) apply(ctx context.Context, present map[string]bool, insts []*model.Instance) {
	byID := make(map[string]*model.Instance, len(insts))
	byUID := make(map[types.UID]*model.Instance, len(insts))
	for _, inst := range insts {
		byID[inst.ID] = inst
		if p.ownedBy(inst) {
			byUID[types.UID(inst.Tags[translate.TagPodUID])] = inst
		}
	}
	var retry []*entry
	type annotation struct {
		e  *entry
		kv map[string]string
	}
	var annotations []annotation
	type ev struct {
		pod         *corev1.Pod
		typ, r, msg string
	}
	var events []ev
	var adopted []*entry

	p.mu.Lock()
	now := time.Now()
	for _, e := range p.entries {
		switch {
		case e.deleted || e.final:
			continue
		case e.pending && byUID[e.pod.UID] != nil:
			// An earlier call made the instance but its answer was lost (a
			// crash, a timeout, or a retry refused as a ClientToken
			// mismatch): adopt it instead of creating again.
			inst := byUID[e.pod.UID]
			e.instanceID, e.pending, e.full = inst.ID, false, nil
			annotations = append(annotations, annotation{e, map[string]string{
				AnnotationInstanceID:  inst.ID,
				AnnotationClientToken: translate.ClientToken(e.pod),
				AnnotationVKVersion:   p.cfg.Version,
			}})
			adopted = append(adopted, e)
			p.log.WithFields(logrus.Fields{"namespace": e.pod.Namespace, "pod": e.pod.Name, "instanceId": inst.ID}).Info("adopted the ECI instance an earlier create made")
		case e.pending:
			if !e.creating && now.After(e.nextAttempt) {
				retry = append(retry, e)
			}
			continue
		case e.instanceID == "":
			continue
		}
		if !present[e.instanceID] {
			// Lists are eventually consistent: a fresh instance may be
			// missing once. Twice, it is gone.
			e.missed++
			if e.missed < 2 {
				continue
			}
			msg := fmt.Sprintf("ECI instance %s no longer exists (deleted outside Kubernetes, or released)", e.instanceID)
			e.final = true
			st := terminatedStatus(e.pod)
			st.Phase, st.Reason, st.Message = corev1.PodFailed, ReasonVanished, msg
			e.pod.Status = st
			p.emit(e)
			events = append(events, ev{e.pod, corev1.EventTypeWarning, ReasonVanished, msg})
			continue
		}
		e.missed = 0
		inst := byID[e.instanceID]
		if inst == nil {
			continue // unchanged since its details were last fetched
		}
		st := translate.PodStatus(e.pod, inst)
		if !statusEqual(e.pod.Status, st) {
			e.pod.Status = st
			p.emit(e)
		}
		if translate.IsFinal(inst.Status) {
			e.final = true
		}
		for _, ie := range inst.Events {
			k := eventKey(ie)
			if e.seenEvents[k] >= ie.Count && ie.Count > 0 {
				continue
			}
			if _, seen := e.seenEvents[k]; seen && ie.Count == 0 {
				continue
			}
			e.seenEvents[k] = ie.Count
			typ := ie.Type
			if typ != corev1.EventTypeWarning {
				typ = corev1.EventTypeNormal
			}
			events = append(events, ev{e.pod, typ, ie.Reason, ie.Message})
		}
		if !e.annotated && (inst.CPU > 0 || inst.InstanceType != "") {
			e.annotated = true
			spec := inst.InstanceType
			if spec == "" {
				spec = model.Spec{CPU: inst.CPU, MemoryGi: inst.MemoryGi}.String()
			}
			annotations = append(annotations, annotation{e, map[string]string{
				AnnotationInstanceSpec: spec,
				AnnotationInstanceCPU:  model.FormatFloat(inst.CPU),
				AnnotationInstanceMem:  model.FormatFloat(inst.MemoryGi) + "Gi",
				AnnotationInstanceZone: inst.ZoneID,
			}})
		}
	}
	p.mu.Unlock()

	for _, x := range events {
		p.event(x.pod, x.typ, x.r, x.msg)
	}
	for _, a := range annotations {
		p.annotate(ctx, a.e, a.kv)
	}
	for _, e := range adopted {
		p.mu.Lock()
		pod, id := e.pod.DeepCopy(), e.instanceID
		p.mu.Unlock()
		p.markClaims(ctx, e, pod, id)
	}
	for _, e := range retry {
		p.create(ctx, e)
	}
}

// collect deletes, given a complete list of this node's instances, those
// whose pod no longer exists, and forgets deleted pods the API server no
// longer has. A pod can leave without DeletePod (virtual-kubelet skips the
// provider for a pod that already ended, e.g. a reclaimed spot
// instance's), so an instance's entry alone does not keep it.
func (p *Provider) collect(ctx context.Context, insts []*model.Instance) {
	for _, inst := range insts {
		if !p.ownedBy(inst) {
			continue
		}
		ns, name, uid := inst.Tags[translate.TagNamespace], inst.Tags[translate.TagPod], types.UID(inst.Tags[translate.TagPodUID])
		if p.podCached(ns, name, uid) {
			continue
		}
		// Ask the API server itself, not a cache: deleting a live pod's
		// instance would be far worse than keeping an orphan a minute more.
		pod, err := p.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && pod.UID == uid {
			continue // its pod exists; CreatePod or Recover will adopt it
		}
		if err != nil && !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithField("instanceId", inst.ID).Warn("garbage collection: cannot check the pod; keeping the instance")
			continue
		}
		if err := p.cloud.DeleteContainerGroup(ctx, inst.ID); err != nil && !errdefs.IsNotFound(err) {
			p.log.WithError(err).WithField("instanceId", inst.ID).Warn("garbage collection: deleting an orphaned instance failed")
			continue
		}
		p.mu.Lock()
		if e := p.entries[uid]; e != nil {
			e.deleted = true
		}
		p.mu.Unlock()
		p.log.WithFields(logrus.Fields{"instanceId": inst.ID, "namespace": ns, "pod": name}).Info("deleted orphaned ECI instance")
	}
	// Forget deleted pods once the API server has let them go.
	p.mu.Lock()
	var gone []*entry
	for _, e := range p.entries {
		if e.deleted {
			gone = append(gone, e)
		}
	}
	p.mu.Unlock()
	for _, e := range gone {
		_, err := p.kube.CoreV1().Pods(e.pod.Namespace).Get(ctx, e.pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			p.mu.Lock()
			delete(p.entries, e.pod.UID)
			if p.keys[key(e.pod.Namespace, e.pod.Name)] == e.pod.UID {
				delete(p.keys, key(e.pod.Namespace, e.pod.Name))
			}
			p.mu.Unlock()
		}
	}
}

// podCached tells whether the pod of an instance still exists, from the
// informer's cache where there is one (so a GC tick costs no API call per
// instance), else from the provider's own entries.
func (p *Provider) podCached(ns, name string, uid types.UID) bool {
	if p.pods != nil {
		pod, err := p.pods.Pods(ns).Get(name)
		return err == nil && pod.UID == uid
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[uid]
	return e != nil && !e.deleted
}

func (p *Provider) event(pod *corev1.Pod, typ, reason, msg string) {
	if p.recorder != nil {
		p.recorder.Event(pod, typ, reason, msg)
	}
}

// annotate merges annotations into the pod's metadata, and into the cached
// pod: virtual-kubelet writes the cached pod through pods/status, whose
// metadata the API server keeps, so a stale cache would erase them.
func (p *Provider) annotate(ctx context.Context, e *entry, kv map[string]string) {
	for k, v := range kv {
		if v == "" {
			delete(kv, k)
		}
	}
	p.mu.Lock()
	ns, name := e.pod.Namespace, e.pod.Name
	p.mu.Unlock()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": kv}})
	err := retryTransient(ctx, func() error {
		_, err := p.kube.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		if !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithFields(logrus.Fields{"namespace": ns, "pod": name}).Warn("writing ECI annotations on the pod failed")
		}
		return
	}
	p.mu.Lock()
	ann := make(map[string]string, len(e.pod.Annotations)+len(kv))
	for k, v := range e.pod.Annotations {
		ann[k] = v
	}
	for k, v := range kv {
		ann[k] = v
	}
	e.pod.Annotations = ann
	// The last notification virtual-kubelet writes must carry them.
	p.emit(e)
	p.mu.Unlock()
}

func (p *Provider) markClaims(ctx context.Context, e *entry, pod *corev1.Pod, id string) {
	var names []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationPVCUsedBy + id: pod.Namespace + "/" + pod.Name}}})
		err := retryTransient(ctx, func() error {
			_, err := p.kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Patch(ctx, v.PersistentVolumeClaim.ClaimName, types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		})
		if err != nil {
			p.log.WithError(err).WithField("pvc", v.PersistentVolumeClaim.ClaimName).Warn("annotating the claim failed")
			continue
		}
		names = append(names, v.PersistentVolumeClaim.ClaimName)
	}
	p.mu.Lock()
	e.claimsMarked = names
	p.mu.Unlock()
}

func (p *Provider) unmarkClaims(ctx context.Context, e *entry, pod *corev1.Pod, id string) {
	p.mu.Lock()
	names := e.claimsMarked
	p.mu.Unlock()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationPVCUsedBy + id: nil}}})
	for _, n := range names {
		_, err := p.kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithField("pvc", n).Warn("removing the claim's instance annotation failed")
		}
	}
}

// retryTransient retries API-server writes that fail for passing reasons
// (conflicts, throttling, an API server restarting).
func retryTransient(ctx context.Context, f func() error) error {
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
	var last error
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(context.Context) (bool, error) {
		last = f()
		// Success, or an answer that retrying cannot change.
		done := last == nil || apierrors.IsNotFound(last) || apierrors.IsForbidden(last) || apierrors.IsInvalid(last)
		return done, nil
	})
	return last
}

func eventKey(e model.Event) string { return e.Reason + "\x00" + e.Name + "\x00" + e.Message }

func trimFloat(f float64) string {
	return model.Spec{CPU: f}.String()[:len(model.Spec{CPU: f}.String())-len("-0Gi")]
}

// pendingStatus is the status of a pod whose instance does not run yet.
func pendingStatus(pod *corev1.Pod, waitReason string) corev1.PodStatus {
	now := metav1.Now()
	st := corev1.PodStatus{
		Phase:      corev1.PodPending,
		QOSClass:   pod.Status.QOSClass,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waitReason}}})
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waitReason}}})
	}
	return st
}

// terminatedStatus reports every container terminated after a delete,
// keeping a terminal state the instance already reported.
func terminatedStatus(pod *corev1.Pod) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	now := metav1.Now()
	if st.Phase != corev1.PodFailed {
		st.Phase = corev1.PodSucceeded
	}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
		for i := range list {
			cs := &list[i]
			if cs.State.Terminated != nil {
				continue
			}
			started := now
			if cs.State.Running != nil {
				started = cs.State.Running.StartedAt
			}
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "InstanceDeleted", Message: "the ECI instance was deleted", StartedAt: started, FinishedAt: now}}
			cs.Ready = false
		}
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady || st.Conditions[i].Type == corev1.ContainersReady {
			st.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	return st
}

// statusEqual compares what a pod status says, ignoring heartbeat times.
func statusEqual(a, b corev1.PodStatus) bool {
	a, b = *a.DeepCopy(), *b.DeepCopy()
	for _, s := range []*corev1.PodStatus{&a, &b} {
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
			s.Conditions[i].LastProbeTime = metav1.Time{}
		}
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
