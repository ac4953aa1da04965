package provider

import (
	"hash/fnv"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci/model"
)

// entry is what the provider knows of one pod. The provider's mu guards
// every field.
type entry struct {
	phase phase
	// pod is what the provider keeps of the pod (see podRecord), with the
	// status last reported.
	pod *podRecord
	// full is the pod as given, kept only until its instance exists or it
	// is refused, and only when the provider has no pod lister to read it
	// from (see podToCreate): create translates it, retries included.
	full *corev1.Pod
	// instanceID is the pod's instance, once one exists (it may outlive
	// the pod's own phase: an ended instance is still deleted).
	instanceID string
	requestID  string
	// attempts counts create calls, for the first-failure event.
	attempts  int
	annotated bool // the size/zone annotations were added
	// unwritten are annotations of the create (instance and request id,
	// client token, version), added with the first sync's size and zone,
	// so that one status write carries them all.
	unwritten map[string]string
	missed    int // consecutive lists the instance was absent from
	// detailsAsked is when the details last taken in were asked for: the
	// full list runs beside the polls, and older details must not undo
	// newer ones.
	detailsAsked time.Time
	seenEvents   seenEvents
	claimsMarked []string        // PVC names annotated with this instance
	noted        map[string]bool // translation notes already sent as events
}

// to moves e to next if the lifecycle allows it, and reports whether it
// did; a refused move is a bug, logged by the caller's context.
func (e *entry) to(next phase) bool {
	if !can(e.phase, next) {
		return false
	}
	e.phase = next
	return true
}

// listed reports whether the pod counts as running on the node (for
// virtual-kubelet's GetPods and the kubelet API's /runningpods): it holds
// an instance, or one is being made, and it is not being deleted.
func (e *entry) listed() bool {
	switch e.phase {
	case phaseCreating:
		return true
	case phaseRunning, phaseFinal, phaseDeleteFailed:
		return e.instanceID != ""
	}
	return false
}

// running reports whether the pod's instance is up, for stats.
func (e *entry) running() bool {
	switch e.phase {
	case phaseRunning, phaseDeleting, phaseDeleteFailed:
		return e.instanceID != ""
	}
	return false
}

// seenEvents are the instance events a pod was told of, each by its key's
// hash (see seen) with the count it had. A pod sees a few: a map of their
// texts took 305 bytes a pod more, a tenth of all the provider holds of
// one (BenchmarkHeldPerPod).
type seenEvents []seenEvent

type seenEvent struct {
	key   uint64
	count int32
}

// seen returns the count the event of key k had when last told, and
// whether it was. A collision of two keys' 64-bit hashes would hide one
// event of a pod: with a pod's handful of events, less likely than any
// hardware fault.
func (s seenEvents) seen(k uint64) (int32, bool) {
	for _, x := range s {
		if x.key == k {
			return x.count, true
		}
	}
	return 0, false
}

// tell records that the event of key k was told with count n.
func (s *seenEvents) tell(k uint64, n int32) {
	for i := range *s {
		if (*s)[i].key == k {
			(*s)[i].count = n
			return
		}
	}
	*s = append(*s, seenEvent{k, n})
}

// eventKey tells an instance's events apart: ECI counts repeats of one.
func eventKey(e model.Event) uint64 {
	h := fnv.New64a()
	for _, f := range []string{e.Reason, e.Name, e.Message} {
		_, _ = io.WriteString(h, f)
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

func key(ns, name string) string { return ns + "/" + name }

// slim is a copy of pod without its managedFields: nothing here reads
// them, and at 10,000 pods the copies the provider holds and hands to
// virtual-kubelet would carry megabytes of them.
func slim(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	out.ManagedFields = nil
	return out
}

// podRecord is what the provider keeps of a pod: its name, namespace, UID
// and the annotations the provider wrote (all its metadata when there is
// no pod lister to read it from: see newPodRecord), its status, and of its
// spec what statuses and claims are built from (the node, the restart
// policy, each container's name and image, the claims it mounts). A
// corev1.Pod per pod, a spec of 568 bytes with the containers' 408 each,
// was the provider's largest memory at 10,000 pods. Every field is guarded
// by the provider's mu.
type podRecord struct {
	metav1.ObjectMeta
	Status         corev1.PodStatus
	nodeName       string
	restartPolicy  corev1.RestartPolicy
	initContainers []containerRef
	containers     []containerRef
	claims         []corev1.Volume
}

type containerRef struct{ name, image string }

// newPodRecord keeps what the provider needs of pod. With allMeta, it keeps
// all of the pod's metadata (but managedFields), for a provider with no
// pod lister; else only the pod's identity and the provider's own
// annotations: reports take the rest from the lister (see reported).
func newPodRecord(pod *corev1.Pod, allMeta bool) *podRecord {
	r := &podRecord{Status: *pod.Status.DeepCopy(), nodeName: pod.Spec.NodeName, restartPolicy: pod.Spec.RestartPolicy}
	if allMeta {
		r.ObjectMeta = *pod.ObjectMeta.DeepCopy()
		r.ManagedFields = nil
	} else {
		r.Name, r.Namespace, r.UID, r.ResourceVersion = pod.Name, pod.Namespace, pod.UID, pod.ResourceVersion
		keepOwn(&r.ObjectMeta, pod.Annotations)
	}
	refs := func(cs []corev1.Container) []containerRef {
		if len(cs) == 0 {
			return nil
		}
		out := make([]containerRef, len(cs))
		for i, c := range cs {
			out[i] = containerRef{c.Name, c.Image}
		}
		return out
	}
	r.initContainers, r.containers = refs(pod.Spec.InitContainers), refs(pod.Spec.Containers)
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			r.claims = append(r.claims, corev1.Volume{Name: v.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim.DeepCopy()}})
		}
	}
	return r
}

// view is the pod r describes, as a skeleton: r's metadata and status,
// not copied, and the spec r keeps. Only for reading under mu.
func (r *podRecord) view() *corev1.Pod {
	containers := func(refs []containerRef) []corev1.Container {
		if len(refs) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(refs))
		for i, c := range refs {
			out[i] = corev1.Container{Name: c.name, Image: c.image}
		}
		return out
	}
	return &corev1.Pod{ObjectMeta: r.ObjectMeta, Status: r.Status, Spec: corev1.PodSpec{
		NodeName: r.nodeName, RestartPolicy: r.restartPolicy,
		InitContainers: containers(r.initContainers), Containers: containers(r.containers), Volumes: r.claims,
	}}
}

// pod is view's deep copy, for use outside mu.
func (r *podRecord) pod() *corev1.Pod { return r.view().DeepCopy() }

// ref is the pod's identity, all an event needs.
func (r *podRecord) ref() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace, UID: r.UID, ResourceVersion: r.ResourceVersion}}
}
