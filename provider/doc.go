// Package provider is vnode's virtual-kubelet provider: it runs every pod
// bound to the virtual node as an ECI container group. Each pod has a
// phase (phase.go) that changes only along allowed moves. CreatePod and
// DeletePod queue the pod on rate-limited workqueues (one for creates, one
// for deletes, so a create backlog never holds up a delete) whose workers
// translate it (package translate) and create the group with a ClientToken
// derived from the pod UID, or delete it, retrying each pod with its own
// backoff; one tag-filtered list of this node's instances per sync tick
// feeds a cache that serves GetPod/GetPods, and status changes reach
// virtual-kubelet from a second queue, never under the provider's lock; ECI events become pod events; the
// instance id and size are written back as pod annotations; instances whose
// pod is gone are garbage-collected, and a restart rebuilds the cache from
// the cloud so nothing is created twice.
//
// Cloud errors never turn into "pod not found", and transient ones never
// fail a pod: the provider keeps retrying with backoff. Only a pod ECI
// cannot run is marked Failed, with a reason and an event.
package provider
