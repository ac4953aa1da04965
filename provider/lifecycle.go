package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// missingObject are refusals that may resolve by themselves.
var missingObject = map[string]bool{"MissingConfigMap": true, "MissingSecret": true, "MissingConfigMapKey": true, "MissingSecretKey": true, "MissingVolumeKey": true}

// errRetry asks for another attempt after the pod's backoff; what failed
// was logged and, the first time for each cause, recorded as an event.
var errRetry = errors.New("retry later")

// CreatePod implements node.PodLifecycleHandler: it takes the pod in and
// queues its create.
func (p *Provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	if e, ok := p.entries[pod.UID]; ok && (e.phase != phaseDeleted || e.instanceID != "") {
		p.mu.Unlock()
		return nil // known: created, being created, refused or being deleted
	}
	e := &entry{phase: phaseWaiting, pod: newPodRecord(pod, p.pods == nil)}
	if p.pods == nil {
		e.full = slim(pod) // no informer to read it from when its create comes
	}
	e.pod.Status = pendingStatus(pod, "ContainerCreating")
	p.entries[pod.UID] = e
	p.keys[key(pod.Namespace, pod.Name)] = pod.UID
	if translate.IsDaemonSetPod(pod) {
		// A node agent has nothing to run on an ECI instance. Staying
		// Pending (not Failed) keeps the DaemonSet controller from
		// recreating it in a loop.
		msg := "DaemonSet pods do not run on virtual nodes; exclude the node with nodeAffinity type NotIn [virtual-kubelet]"
		p.moveTo(e, phaseFinal)
		e.full = nil
		e.pod.Status = pendingStatus(pod, ReasonDaemonSet)
		e.pod.Status.Reason, e.pod.Status.Message = ReasonDaemonSet, msg
		p.changed(e)
		p.mu.Unlock()
		p.event(pod, corev1.EventTypeWarning, ReasonDaemonSet, msg)
		p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name}).Info("not running a DaemonSet pod on the virtual node")
		return nil
	}
	p.mu.Unlock()
	p.creates.Add(pod.UID)
	return nil
}

// DeletePod implements node.PodLifecycleHandler: it queues the instance's
// delete; the pod is reported terminated once the instance is gone. It may
// be called more than once.
func (p *Provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[pod.UID]
	if !ok {
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	switch {
	case e.phase == phaseDeleting || e.phase == phaseDeleted:
		return nil
	case e.phase == phaseDeleteFailed:
		return nil // already retried with backoff
	case e.instanceID != "":
		p.moveTo(e, phaseDeleting)
		p.deletes.Add(pod.UID)
	default:
		// Nothing runs: a create in flight that makes an instance after
		// all finds the pod deleted and queues its delete.
		p.moveTo(e, phaseDeleted)
		e.full = nil
		e.pod.Status = terminatedStatus(e.pod.Status)
		p.changed(e)
	}
	return nil
}

// processCreate makes one queued pod's instance, processDelete deletes
// one; each returns false once its queue is shut down.
func (p *Provider) processCreate(ctx context.Context) bool {
	return p.processNext(ctx, p.creates, phaseWaiting, p.create)
}

func (p *Provider) processDelete(ctx context.Context) bool {
	return p.processNext(ctx, p.deletes, phaseDeleting, p.deleteInstance)
}

// processNext takes one pod from q and, if its phase is still one that q
// serves (want; a failed delete's phaseDeleteFailed counts as
// phaseDeleting), does what it asks of the cloud; a failure comes back
// after the pod's backoff. Running it again, at any time, does no harm: a
// pod whose phase moved on (deleted while its create waited, adopted by
// a sync) is dropped here, and the queue of its new phase has it.
func (p *Provider) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[types.UID], want phase, do func(context.Context, *entry) error) bool {
	uid, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(uid)
	p.mu.Lock()
	e := p.entries[uid]
	due := e != nil && (e.phase == want || (want == phaseDeleting && e.phase == phaseDeleteFailed))
	p.mu.Unlock()
	if !due {
		q.Forget(uid)
		return true
	}
	if err := do(ctx, e); err != nil {
		q.AddRateLimited(uid)
		return true
	}
	q.Forget(uid)
	return true
}

// create translates and creates e's instance. It fails the pod when it
// cannot run or ECI refuses it, and returns errRetry when it may work later.
func (p *Provider) create(ctx context.Context, e *entry) error {
	p.mu.Lock()
	if e.phase != phaseWaiting {
		p.mu.Unlock()
		return nil
	}
	pod := p.podToCreate(e)
	if pod == nil {
		p.mu.Unlock()
		// Gone from the informer: its DeletePod is on the way and ends
		// the retries.
		return fmt.Errorf("pod %s/%s is no longer in the informer", e.pod.Namespace, e.pod.Name)
	}
	p.moveTo(e, phaseCreating)
	e.attempts++
	p.mu.Unlock()
	log := p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name})

	// A pod ECI cannot run is refused before any token is minted for it.
	var g *model.ContainerGroup
	err := translate.CheckSupported(pod)
	if err == nil {
		var tokens translate.Tokens
		if tokens, err = p.mintTokens(ctx, pod); err != nil {
			return p.retryLater(e, pod, "tokens", err, log)
		}
		var notes [][2]string
		src := p.src
		src.Tokens = tokens
		src.Note = func(reason, msg string) { notes = append(notes, [2]string{reason, msg}) }
		g, err = translate.Pod(pod, p.cfg.Node, src)
		p.noteOnce(e, pod, notes)
	}
	if err != nil {
		u, ok := translate.AsUnsupported(err)
		switch {
		case ok && missingObject[u.Reason] && time.Since(pod.CreationTimestamp.Time) < p.cfg.MissingObjectGrace:
			// A referenced object may be about to appear (kube-root-ca.crt
			// is published into new namespaces a moment later, informers
			// lag): wait for it like the kubelet does, then give up.
			return p.retryLater(e, pod, u.Reason, err, log)
		case ok:
			p.fail(e, u.Reason, u.Message)
			log.WithField("reason", u.Reason).Warn("pod cannot run on ECI")
			return nil
		}
		return p.retryLater(e, pod, "translation", err, log)
	}
	id, reqID, err := p.cloud.CreateContainerGroup(ctx, g)
	if err != nil {
		p.mu.Lock()
		adopted := e.instanceID != ""
		p.mu.Unlock()
		switch {
		case adopted:
			return nil // the sync loop found the instance an earlier call made
		case errdefs.IsInvalidInput(err):
			p.fail(e, ReasonECIRejected, "ECI refused the instance: "+err.Error())
			log.WithError(err).Warn("ECI refused the instance")
			return nil
		}
		return p.retryLater(e, pod, "cloud", err, log)
	}
	p.mu.Lock()
	switch {
	case e.instanceID != "":
		// Adopted by a sync meanwhile: that sync annotated it.
		p.mu.Unlock()
		return nil
	case e.phase == phaseDeleted:
		// Deleted while the call ran: the instance goes too.
		e.instanceID, e.requestID = id, reqID
		p.moveTo(e, phaseDeleting)
		p.mu.Unlock()
		p.deletes.Add(e.pod.UID)
		return nil
	}
	e.instanceID, e.requestID, e.full = id, reqID, nil
	p.moveTo(e, phaseRunning)
	// Reported with the next sync's status, size and zone, in one status
	// write: reported now, they would cost a status write of their own.
	e.unwritten = map[string]string{
		AnnotationInstanceID:  id,
		AnnotationRequestID:   reqID,
		AnnotationClientToken: g.ClientToken,
		AnnotationVKVersion:   p.cfg.Version,
	}
	p.mu.Unlock()
	p.createdInstance()
	log.WithField("instanceId", id).Info("created ECI instance")
	p.event(pod, corev1.EventTypeNormal, ReasonCreated, "created ECI instance "+id)
	p.markClaims(ctx, e, pod, id)
	return nil
}

// TokenIssuer mints service-account tokens bound to a pod, as the kubelet
// does for projected volumes (the TokenRequest API).
type TokenIssuer interface {
	ServiceAccountToken(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (token string, expiry time.Time, err error)
}

// mintTokens mints the tokens the pod's volumes need, so that translation
// only reads them.
func (p *Provider) mintTokens(ctx context.Context, pod *corev1.Pod) (translate.Tokens, error) {
	reqs := translate.TokenRequests(pod)
	if len(reqs) == 0 {
		return nil, nil
	}
	if p.cfg.Tokens == nil {
		return nil, fmt.Errorf("pod %s/%s needs service-account tokens and no token issuer is configured", pod.Namespace, pod.Name)
	}
	out := make(translate.Tokens, len(reqs))
	for _, r := range reqs {
		tok, exp, err := p.cfg.Tokens.ServiceAccountToken(ctx, pod, r.Audience, r.ExpirationSeconds)
		if err != nil {
			return nil, fmt.Errorf("requesting a service-account token for %s/%s (audience %q): %w", pod.Namespace, pod.Spec.ServiceAccountName, r.Audience, err)
		}
		out[r] = translate.Token{Value: tok, Expiry: exp}
	}
	return out, nil
}

// noteOnce records each translation note once, not at every retry while a
// mandatory object is awaited; an attempt may stop before env (at a volume
// whose object is not there yet), so a later one may note more.
func (p *Provider) noteOnce(e *entry, pod *corev1.Pod, notes [][2]string) {
	var fresh [][2]string
	p.mu.Lock()
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
	for _, n := range fresh {
		p.event(pod, corev1.EventTypeWarning, n[0], n[1])
	}
}

// retryLater puts e back to wait for its next attempt, which the work
// queue makes after the pod's backoff. The first failure of each cause
// (a missing object, minting tokens, translation, the cloud) becomes an
// event, so a pod that waited for a secret still shows why ECI then
// refuses it, and a retry loop does not flood the pod's events.
func (p *Provider) retryLater(e *entry, pod *corev1.Pod, cause string, err error, log logrus.FieldLogger) error {
	p.mu.Lock()
	if e.phase == phaseCreating {
		p.moveTo(e, phaseWaiting)
	}
	k := "retry\x00" + cause
	first := !e.noted[k]
	if first {
		if e.noted == nil {
			e.noted = map[string]bool{}
		}
		e.noted[k] = true
	}
	p.mu.Unlock()
	log.WithError(err).WithField("cause", cause).Warn("creating the ECI instance failed; retrying with backoff")
	if first {
		p.event(pod, corev1.EventTypeWarning, ReasonRetrying, "cannot create the ECI instance yet, retrying: "+err.Error())
	}
	return errRetry
}

// podToCreate is a copy of the pod e's instance is made from: the
// informer's, when the provider has one, so that no copy of its own waits
// with each queued create (at 10,000 pods waiting on ECI's create quota
// those copies were the provider's largest memory); else e.full. nil when
// the informer no longer has the pod. mu is held.
func (p *Provider) podToCreate(e *entry) *corev1.Pod {
	if e.full != nil {
		return e.full.DeepCopy()
	}
	if p.pods == nil {
		return nil
	}
	l, err := p.pods.Pods(e.pod.Namespace).Get(e.pod.Name)
	if err != nil || l.UID != e.pod.UID {
		return nil
	}
	return slim(l)
}

// fail ends a pod that cannot run: Failed, with reason and event.
func (p *Provider) fail(e *entry, reason, msg string) {
	p.mu.Lock()
	if !p.moveTo(e, phaseFinal) {
		p.mu.Unlock()
		return
	}
	e.full = nil
	st := pendingStatus(e.pod.view(), reason)
	st.Phase, st.Reason, st.Message = corev1.PodFailed, reason, msg
	for i := range st.ContainerStatuses {
		st.ContainerStatuses[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: reason, Message: msg}}
	}
	e.pod.Status = st
	pod := e.pod.ref()
	p.changed(e)
	p.mu.Unlock()
	p.event(pod, corev1.EventTypeWarning, reason, msg)
}

// deleteInstance deletes e's instance and reports the pod terminated; on
// failure the pod is listed as running again and the delete retried.
func (p *Provider) deleteInstance(ctx context.Context, e *entry) error {
	p.mu.Lock()
	if e.phase == phaseDeleteFailed {
		p.moveTo(e, phaseDeleting)
	}
	id, pod := e.instanceID, e.pod.pod()
	p.mu.Unlock()
	log := p.log.WithFields(logrus.Fields{"namespace": pod.Namespace, "pod": pod.Name, "instanceId": id})
	if id != "" {
		if err := p.cloud.DeleteContainerGroup(ctx, id); err != nil && !errdefs.IsNotFound(err) {
			p.mu.Lock()
			p.moveTo(e, phaseDeleteFailed)
			p.mu.Unlock()
			log.WithError(err).Warn("deleting the ECI instance failed; retrying with backoff")
			return fmt.Errorf("deleting ECI instance %s: %w", id, err)
		}
		log.Info("deleted ECI instance")
		p.unmarkClaims(ctx, e, pod, id)
	}
	p.mu.Lock()
	if e.phase != phaseDeleted && p.moveTo(e, phaseDeleted) { // a GC may have been first
		e.full = nil
		e.pod.Status = terminatedStatus(e.pod.Status)
		p.changed(e)
	}
	p.mu.Unlock()
	return nil
}
