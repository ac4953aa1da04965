package provider

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// Recover rebuilds the cache from the cloud and the API server after a
// restart: every instance of this node whose pod still exists is adopted,
// so CreatePod will not create it again.
func (p *Provider) Recover(ctx context.Context) error {
	var insts []*model.Instance
	err := p.cloud.ListContainerGroups(ctx, p.nodeTags(), func(page []*model.Instance) error {
		insts = append(insts, page...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing this node's instances: %w", err)
	}
	adopted := 0
	for _, inst := range insts {
		if !p.ownedBy(inst) {
			continue
		}
		ns, name, uid := inst.Tags[translate.TagNamespace], inst.Tags[translate.TagPod], types.UID(inst.Tags[translate.TagPodUID])
		pod, err := p.podOf(ctx, ns, name, uid)
		if apierrors.IsNotFound(err) {
			continue // an orphan: GC deletes it
		}
		if err != nil {
			return fmt.Errorf("reading pod %s/%s of instance %s: %w", ns, name, inst.ID, err)
		}
		e := &entry{phase: phaseRunning, pod: newPodRecord(pod, p.pods == nil), instanceID: inst.ID}
		ns, name = pod.Namespace, pod.Name // the tag may hold a hashed name
		e.annotated = pod.Annotations[AnnotationInstanceSpec] != ""
		for _, ev := range inst.Events {
			e.seenEvents.tell(eventKey(ev), ev.Count) // replayed events are not news
		}
		if pod.Annotations[AnnotationInstanceID] != inst.ID {
			// Created just before a crash, never annotated: the first
			// sync reports them (it fetches every instance's details).
			e.unwritten = map[string]string{
				AnnotationInstanceID:  inst.ID,
				AnnotationClientToken: translate.ClientToken(pod),
				AnnotationVKVersion:   p.cfg.Version,
			}
		}
		// Keep the status the API server has: the first sync reports any
		// difference (a status computed here would look unchanged).
		p.mu.Lock()
		p.entries[uid] = e
		p.keys[key(ns, name)] = uid
		p.mu.Unlock()
		adopted++
	}
	p.log.WithField("instances", len(insts)).WithField("adopted", adopted).Info("recovered state from ECI")
	return nil
}

// collectOrphans deletes those of insts (this node's) whose pod no longer
// exists. A pod can leave without DeletePod (virtual-kubelet skips the
// provider for a pod that already ended, e.g. a reclaimed spot
// instance's), so an instance's entry alone does not keep it.
func (p *Provider) collectOrphans(ctx context.Context, insts []*model.Instance) {
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
		_, err := p.podOf(ctx, ns, name, uid)
		if err == nil {
			continue // its pod exists; CreatePod or Recover will adopt it
		}
		if !apierrors.IsNotFound(err) {
			p.log.WithError(err).WithField("instanceId", inst.ID).Warn("garbage collection: cannot check the pod; keeping the instance")
			continue
		}
		if err := p.cloud.DeleteContainerGroup(ctx, inst.ID); err != nil && !errdefs.IsNotFound(err) {
			p.log.WithError(err).WithField("instanceId", inst.ID).Warn("garbage collection: deleting an orphaned instance failed")
			continue
		}
		p.mu.Lock()
		if e := p.entries[uid]; e != nil && e.phase != phaseDeleted {
			p.moveTo(e, phaseDeleted)
		}
		p.mu.Unlock()
		p.log.WithFields(logrus.Fields{"instanceId": inst.ID, "namespace": ns, "pod": name}).Info("deleted orphaned ECI instance")
	}
}

// forgetDeleted forgets deleted pods once the API server has let them go.
func (p *Provider) forgetDeleted(ctx context.Context) {
	p.mu.Lock()
	var gone []*entry
	for _, e := range p.entries {
		if e.phase == phaseDeleted {
			gone = append(gone, e)
		}
	}
	p.mu.Unlock()
	for _, e := range gone {
		if p.letGo(ctx, e.pod.ref()) {
			p.mu.Lock()
			delete(p.entries, e.pod.UID)
			if p.keys[key(e.pod.Namespace, e.pod.Name)] == e.pod.UID {
				delete(p.keys, key(e.pod.Namespace, e.pod.Name))
			}
			p.mu.Unlock()
		}
	}
}

// letGo reports whether the API server has let a deleted pod go: from
// the informer's cache where there is one (a GET per deleted pod at each
// full sync was one request more per pod), else asked.
func (p *Provider) letGo(ctx context.Context, pod *corev1.Pod) bool {
	if p.pods != nil {
		return p.goneFromAPI(pod)
	}
	_, err := p.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

// podOf reads, from the API server, the pod with this UID that an
// instance's tags name. A pod name longer than a tag holds was hashed into
// its tag (model.TagValue), so such a pod is found among this node's pods
// in its namespace instead. The error is NotFound when no such pod exists.
func (p *Provider) podOf(ctx context.Context, ns, nameTag string, uid types.UID) (*corev1.Pod, error) {
	pod, err := p.kube.CoreV1().Pods(ns).Get(ctx, nameTag, metav1.GetOptions{})
	switch {
	case err == nil && pod.UID == uid:
		return pod, nil
	case err != nil && !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading pod %s/%s: %w", ns, nameTag, err)
	case len(nameTag) < model.MaxTagValue:
		return nil, apierrors.NewNotFound(corev1.Resource("pods"), nameTag)
	}
	list, err := p.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", p.cfg.Node.NodeName).String()})
	if err != nil {
		return nil, fmt.Errorf("listing this node's pods in %s: %w", ns, err)
	}
	for i := range list.Items {
		if list.Items[i].UID == uid {
			return &list.Items[i], nil
		}
	}
	return nil, apierrors.NewNotFound(corev1.Resource("pods"), nameTag)
}

// podCached tells whether the pod of an instance still exists, from the
// informer's cache where there is one (so a GC tick costs no API call per
// instance), else from the provider's own entries. The pod's name comes
// from its entry when there is one: a name tag may hold a hashed name.
func (p *Provider) podCached(ns, nameTag string, uid types.UID) bool {
	p.mu.Lock()
	e := p.entries[uid]
	name, alive := nameTag, e != nil && e.phase != phaseDeleted
	if e != nil {
		name = e.pod.Name
	}
	p.mu.Unlock()
	if p.pods != nil {
		pod, err := p.pods.Pods(ns).Get(name)
		return err == nil && pod.UID == uid
	}
	return alive
}
