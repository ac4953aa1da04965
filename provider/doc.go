// Package provider is vnode's virtual-kubelet provider: it runs every pod
// bound to the virtual node as an ECI container group. CreatePod translates
// the pod (package translate) and creates the group with a ClientToken
// derived from the pod UID; one tag-filtered list of this node's instances
// per sync tick feeds a cache that serves GetPod/GetPods and notifies
// virtual-kubelet of every status change; ECI events become pod events; the
// instance id and size are written back as pod annotations; instances whose
// pod is gone are garbage-collected, and a restart rebuilds the cache from
// the cloud so nothing is created twice.
//
// Cloud errors never turn into "pod not found", and transient ones never
// fail a pod: the provider keeps retrying with backoff. Only a pod ECI
// cannot run is marked Failed, with a reason and an event.
package provider
