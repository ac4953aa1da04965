package tunnel

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Target is the node a CONNECT host names.
type Target struct {
	Node        string
	IP          string // the node's InternalIP (or first address); "" if it has none
	KubeletPort int    // 0 if unknown
}

// NodeResolver maps a CONNECT host (a node IP, a node name or a Hostname
// address) to its node.
type NodeResolver interface {
	Resolve(host string) (Target, bool)
}

// StaticNodes resolves from a fixed table, keyed by node name; each target's
// IP resolves to it too. Tests and clusters without API access use it.
type StaticNodes map[string]Target

// Resolve implements NodeResolver.
func (s StaticNodes) Resolve(host string) (Target, bool) {
	if t, ok := s[host]; ok {
		return t, true
	}
	for _, t := range s {
		if t.IP != "" && t.IP == host {
			return t, true
		}
	}
	return Target{}, false
}

// NodeIndex follows Node objects with an informer and indexes them by
// name and every address, so both nodeIP:port and nodeName:port route.
type NodeIndex struct {
	mu     sync.RWMutex
	byName map[string]Target
	byAddr map[string]string // address -> node name
	addrs  map[string][]string
	synced cache.InformerSynced
}

// NewNodeIndex starts the informer; it stops with ctx.
func NewNodeIndex(ctx context.Context, client kubernetes.Interface, resync time.Duration) (*NodeIndex, error) {
	ix := &NodeIndex{byName: map[string]Target{}, byAddr: map[string]string{}, addrs: map[string][]string{}}
	f := informers.NewSharedInformerFactory(client, resync)
	inf := f.Core().V1().Nodes().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { ix.upsert(o) },
		UpdateFunc: func(_, o any) { ix.upsert(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				ix.delete(n.Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching nodes: %w", err)
	}
	ix.synced = inf.HasSynced
	f.Start(ctx.Done())
	return ix, nil
}

// HasSynced says whether the first list has been indexed (readiness).
func (ix *NodeIndex) HasSynced() bool { return ix.synced != nil && ix.synced() }

func (ix *NodeIndex) upsert(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	t := Target{Node: n.Name, KubeletPort: int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)}
	var addrs []string
	for _, a := range n.Status.Addresses {
		addrs = append(addrs, a.Address)
		if a.Type == corev1.NodeInternalIP && t.IP == "" {
			t.IP = a.Address
		}
	}
	if t.IP == "" {
		for _, a := range n.Status.Addresses {
			if net.ParseIP(a.Address) != nil {
				t.IP = a.Address
				break
			}
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.dropLocked(n.Name)
	ix.byName[n.Name] = t
	ix.addrs[n.Name] = addrs
	for _, a := range addrs {
		ix.byAddr[a] = n.Name
	}
}

func (ix *NodeIndex) delete(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.dropLocked(name)
}

func (ix *NodeIndex) dropLocked(name string) {
	for _, a := range ix.addrs[name] {
		if ix.byAddr[a] == name {
			delete(ix.byAddr, a)
		}
	}
	delete(ix.addrs, name)
	delete(ix.byName, name)
}

// Resolve implements NodeResolver.
func (ix *NodeIndex) Resolve(host string) (Target, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if t, ok := ix.byName[host]; ok {
		return t, true
	}
	if name, ok := ix.byAddr[host]; ok {
		t, ok := ix.byName[name]
		return t, ok
	}
	return Target{}, false
}
