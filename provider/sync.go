package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// Sync lists this node's instances' statuses once, fetches the details of
// those that changed and updates their pods' status and annotations; then,
// when it is due (fullDue), lists every instance in full (fullList). The
// status list costs one call per 200 instances, so a sync's cost follows
// what changed, not how many pods run. Creates and deletes are not its
// business: they have their own queue, so a backlog of either never delays
// status. Run does the same, with the full list beside the syncs.
func (p *Provider) Sync(ctx context.Context) error {
	if err := p.sync(ctx, false); err != nil {
		return err
	}
	if !p.fullDue() {
		return nil
	}
	return p.fullList(ctx)
}

// changesMargin widens SinceSecond past the last list's start: ECI's
// clock and ours differ, and a change made as that list was answered may
// be missing from it.
const changesMargin = 2 * time.Second

// sync is the status list, or with changes the poll between two lists: it
// lists only the statuses that changed since the last list began
// (SinceSecond, with a margin for the clocks), so polling every second
// while creates go on costs what changed, not every instance of the node
// each time (O(N²) over a burst). A poll judges no instance gone: only a
// whole list can.
func (p *Provider) sync(ctx context.Context, changes bool) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	var within time.Duration
	if changes {
		if p.lastList.IsZero() {
			changes = false // nothing to poll from: a whole list
		} else {
			within = time.Since(p.lastList) + changesMargin
		}
	}
	listed := time.Now()
	// Statuses first: details fetched after them are at least as new.
	statuses, err := p.cloud.ListStatuses(ctx, p.nodeTags(), within)
	if err != nil {
		// Never taken as "all instances gone": statuses stay as they were.
		return fmt.Errorf("listing this node's instance statuses: %w", err)
	}
	var changed []string
	for _, st := range statuses {
		if d, ok := p.digests[st.ID]; !ok || d != st.Digest {
			changed = append(changed, st.ID)
		}
	}
	fetched := time.Now()
	insts, err := p.cloud.GetContainerGroups(ctx, changed)
	if err != nil {
		return fmt.Errorf("reading this node's changed instances: %w", err)
	}
	p.lastList = listed
	var present map[string]bool // nil: this list cannot tell what is gone
	if changes {
		for _, st := range statuses {
			p.digests[st.ID] = st.Digest
		}
	} else {
		p.digests = make(map[string]uint64, len(statuses))
		present = make(map[string]bool, len(statuses))
		for _, st := range statuses {
			p.digests[st.ID] = st.Digest
			present[st.ID] = true
		}
	}
	p.apply(ctx, present, insts, fetched)
	return nil
}

// fullList reads every instance's details, a page at a time (see
// Cloud.ListContainerGroups): each page's pods (events that came without
// a status change are replayed) and orphans as it comes, then the deleted
// pods the API server has let go are forgotten. It holds no sync's lock:
// at 10,000 pods it is 500 calls, 15 s of ECI's DescribeContainerGroups
// quota, and every poll waited behind it, so in a burst the pods whose
// instances started meanwhile did too. Polls go on beside it; a pod keeps
// the newest details it was given (see applyOne).
func (p *Provider) fullList(ctx context.Context) error {
	p.fullMu.Lock()
	defer p.fullMu.Unlock()
	asked, calls := time.Now(), 0
	err := p.cloud.ListContainerGroups(ctx, p.nodeTags(), func(page []*model.Instance) error {
		calls++
		p.apply(ctx, nil, page, asked)
		p.collectOrphans(ctx, page)
		asked = time.Now() // the next page is asked for after this one is taken in
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing this node's instances: %w", err)
	}
	p.lastFull, p.lastFullCalls = time.Now(), calls
	p.forgetDeleted(ctx)
	return nil
}

// fullListMaxDelay is how many GCIntervals a burst may put the full list
// off (see fullDue).
const fullListMaxDelay = 10

// fullListShare is the most of the DescribeContainerGroups quota the full
// list may take, over time (see fullDue).
const fullListShare = 0.1

// fullDue reports whether the full list is due: GCInterval after the
// last, or later where the node is large. At 10,000 pods a full list is
// 500 calls, a quarter of ECI's DescribeContainerGroups quota every
// minute, which the polls' details and any other node of the account
// share, and most of the node's CPU when idle: it keeps to fullListShare
// of the quota (every 2.5 minutes at 10,000 pods; every minute up to
// 4,000). While instances are being created it waits until it is
// fullListMaxDelay GCIntervals late: over a burst of 10,000 pods, lists of
// the pods made so far would come every minute; orphans and replayed
// events can wait for the burst to end, and a burst that lasts still gets
// its lists.
func (p *Provider) fullDue() bool {
	p.fullMu.Lock()
	last, calls := p.lastFull, p.lastFullCalls
	p.fullMu.Unlock()
	if last.IsZero() {
		return true
	}
	since := time.Since(last)
	if p.creating() {
		return since >= fullListMaxDelay*p.cfg.GCInterval
	}
	every := p.cfg.GCInterval
	if budget := float64(p.cfg.DescribeQuota) * fullListShare; budget > 0 {
		every = max(every, time.Duration(float64(calls)/budget*float64(time.Minute)))
	}
	return since >= every
}

// learnt is what apply found under the lock and acts on after it.
type learnt struct {
	events []podEvent
	// adopted are pods whose instance an earlier create made, found by a
	// list: their claims are marked.
	adopted []*entry
}

type podEvent struct {
	pod                  *corev1.Pod
	typ, reason, message string
}

// apply takes in what a sync learnt: present holds every instance of this
// node (nil after a poll of changes or a page of the full list, which
// cannot tell), insts the details of those that changed, asked for at
// asked.
func (p *Provider) apply(ctx context.Context, present map[string]bool, insts []*model.Instance, asked time.Time) {
	byID := make(map[string]*model.Instance, len(insts))
	byUID := make(map[types.UID]*model.Instance, len(insts))
	for _, inst := range insts {
		byID[inst.ID] = inst
		if p.ownedBy(inst) {
			byUID[types.UID(inst.Tags[translate.TagPodUID])] = inst
		}
	}
	var out learnt
	p.mu.Lock()
	if present == nil {
		// Only the pods of these instances can change: going through
		// every pod at each poll (one a second during a burst) cost 3.2 s
		// of the sync's 7.4 s of CPU in a 10,000-pod burst.
		for uid := range byUID {
			if e := p.entries[uid]; e != nil {
				p.applyOne(e, nil, byID, byUID, asked, &out)
			}
		}
	} else {
		for _, e := range p.entries {
			p.applyOne(e, present, byID, byUID, asked, &out)
		}
	}
	p.mu.Unlock()

	for _, x := range out.events {
		p.event(x.pod, x.typ, x.reason, x.message)
	}
	for _, e := range out.adopted {
		p.mu.Lock()
		pod, id := e.pod.pod(), e.instanceID
		p.mu.Unlock()
		p.markClaims(ctx, e, pod, id)
	}
}

// applyOne updates one pod from the sync's findings; mu is held.
func (p *Provider) applyOne(e *entry, present map[string]bool, byID map[string]*model.Instance, byUID map[types.UID]*model.Instance, asked time.Time, out *learnt) {
	switch e.phase {
	case phaseDeleted, phaseFinal:
		return
	case phaseWaiting, phaseCreating:
		inst := byUID[e.pod.UID]
		if inst == nil {
			return // its create is queued or under way
		}
		// An earlier call made the instance but its answer was lost (a
		// crash, a timeout, or a retry refused as a ClientToken
		// mismatch): adopt it instead of creating again.
		e.instanceID, e.full = inst.ID, nil
		p.moveTo(e, phaseRunning)
		e.unwritten = map[string]string{
			AnnotationInstanceID:  inst.ID,
			AnnotationClientToken: translate.ClientToken(e.pod.ref()),
			AnnotationVKVersion:   p.cfg.Version,
		}
		out.adopted = append(out.adopted, e)
		p.log.WithFields(logrus.Fields{"namespace": e.pod.Namespace, "pod": e.pod.Name, "instanceId": inst.ID}).Info("adopted the ECI instance an earlier create made")
	}
	if e.instanceID == "" {
		return
	}
	if present != nil && !present[e.instanceID] {
		// Lists are eventually consistent: a fresh instance may be
		// missing once. Twice, it is gone.
		e.missed++
		if e.missed < 2 || e.phase != phaseRunning {
			return
		}
		msg := fmt.Sprintf("ECI instance %s no longer exists (deleted outside Kubernetes, or released)", e.instanceID)
		p.moveTo(e, phaseFinal)
		st := terminatedStatus(e.pod.Status)
		st.Phase, st.Reason, st.Message = corev1.PodFailed, ReasonVanished, msg
		e.pod.Status = st
		p.changed(e)
		out.events = append(out.events, podEvent{e.pod.ref(), corev1.EventTypeWarning, ReasonVanished, msg})
		return
	}
	if present != nil {
		e.missed = 0
	}
	inst := byID[e.instanceID]
	if inst == nil {
		return // unchanged since its details were last fetched
	}
	if asked.Before(e.detailsAsked) {
		// A page of the full list asked for before a poll whose newer
		// details were taken in: its status would step back.
		return
	}
	e.detailsAsked = asked
	st := translate.PodStatus(e.pod.view(), inst)
	statusChanged := !statusEqual(e.pod.Status, st)
	if statusChanged {
		e.pod.Status = st
	}
	if translate.IsFinal(inst.Status) && e.phase == phaseRunning {
		p.moveTo(e, phaseFinal)
	}
	for _, ie := range inst.Events {
		k := eventKey(ie)
		if n, seen := e.seenEvents.seen(k); seen && (n >= ie.Count || ie.Count == 0) {
			continue
		}
		e.seenEvents.tell(k, ie.Count)
		typ := ie.Type
		if typ != corev1.EventTypeWarning {
			typ = corev1.EventTypeNormal
		}
		out.events = append(out.events, podEvent{e.pod.ref(), typ, ie.Reason, ie.Message})
	}
	kv := e.unwritten
	e.unwritten = nil
	if !e.annotated && (inst.CPU > 0 || inst.InstanceType != "") {
		e.annotated = true
		spec := inst.InstanceType
		if spec == "" {
			spec = model.Spec{CPU: inst.CPU, MemoryGi: inst.MemoryGi}.String()
		}
		if kv == nil {
			kv = map[string]string{}
		}
		kv[AnnotationInstanceSpec] = spec
		kv[AnnotationInstanceCPU] = model.FormatFloat(inst.CPU)
		kv[AnnotationInstanceMem] = model.FormatFloat(inst.MemoryGi) + "Gi"
		kv[AnnotationInstanceZone] = inst.ZoneID
	}
	switch {
	case len(kv) > 0:
		p.annotate(e, kv) // the status write carries both
	case statusChanged:
		p.changed(e)
	}
}
