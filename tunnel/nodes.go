package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vnode-project/vnode/internal/identity"
)

// Target is what routing knows of one Node.
type Target struct {
	Node        string
	IP          string // the node's InternalIP (or first address); "" if it has none
	KubeletPort int    // 0 if unknown
	// Virtual says the Node is labelled type=virtual-kubelet: only a
	// virtual node's identity may serve it, and only it may serve one.
	Virtual bool
	// Domain is the node's network domain (NetworkDomainLabel), "" if
	// none; Gateway says the node is a gateway of it (domain.go).
	Domain  string
	Gateway bool
}

// NodeResolver says what the Node objects say. It decides nothing: the
// routing rule (Server.route) does, from these facts.
type NodeResolver interface {
	// Node returns the node called name.
	Node(name string) (Target, bool)
	// Claimants returns every node that lists addr among its addresses,
	// sorted by name.
	Claimants(addr string) []Target
	// Gateways returns the gateways of network domain domain, sorted by
	// name.
	Gateways(domain string) []Target
}

// StaticNodes is a fixed table keyed by node name; each target's IP is its
// one address. Tests and clusters without API access use it.
type StaticNodes map[string]Target

// Node implements NodeResolver.
func (s StaticNodes) Node(name string) (Target, bool) {
	t, ok := s[name]
	return t, ok
}

// Claimants implements NodeResolver.
func (s StaticNodes) Claimants(addr string) []Target {
	var out []Target
	addr = canonicalAddr(addr)
	for _, t := range s {
		if t.IP != "" && canonicalAddr(t.IP) == addr {
			out = append(out, t)
		}
	}
	sortByName(out)
	return out
}

// Gateways implements NodeResolver.
func (s StaticNodes) Gateways(domain string) []Target {
	var out []Target
	for _, t := range s {
		if t.Gateway && t.Domain == domain && domain != "" {
			out = append(out, t)
		}
	}
	sortByName(out)
	return out
}

func sortByName(ts []Target) {
	slices.SortFunc(ts, func(a, b Target) int { return strings.Compare(a.Node, b.Node) })
}

// NodeIndex follows Node objects with an informer and indexes them by
// name and by every address. An address may be listed by several nodes
// (edge sites behind NAT reuse private addresses, and a node may write
// any address into its own status): the index keeps every claimant.
type NodeIndex struct {
	mu     sync.RWMutex
	byName map[string]Target
	byAddr map[string]map[string]struct{} // address -> names of the nodes listing it
	addrs  map[string][]string            // node name -> its addresses
	// gateways: network domain -> names of its gateways
	gateways map[string]map[string]struct{}
	synced   cache.InformerSynced
}

// NewNodeIndex starts the informer; it stops with ctx.
func NewNodeIndex(ctx context.Context, client kubernetes.Interface, resync time.Duration) (*NodeIndex, error) {
	return watchNodes(ctx, client, resync, "")
}

// NewDomainNodeIndex indexes only the Nodes in a network domain: what a
// gateway agent needs to check a target, without following every Node of
// the cluster.
func NewDomainNodeIndex(ctx context.Context, client kubernetes.Interface, resync time.Duration) (*NodeIndex, error) {
	return watchNodes(ctx, client, resync, NetworkDomainLabel)
}

// watchNodes follows the Nodes that selector (a label selector, "" for
// all) selects.
func watchNodes(ctx context.Context, client kubernetes.Interface, resync time.Duration, selector string) (*NodeIndex, error) {
	ix := newNodeIndex()
	f := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
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

func newNodeIndex() *NodeIndex {
	return &NodeIndex{byName: map[string]Target{}, byAddr: map[string]map[string]struct{}{}, addrs: map[string][]string{},
		gateways: map[string]map[string]struct{}{}}
}

// HasSynced says whether the first list has been indexed (readiness).
func (ix *NodeIndex) HasSynced() bool { return ix.synced != nil && ix.synced() }

func (ix *NodeIndex) upsert(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	t := Target{Node: n.Name, KubeletPort: int(n.Status.DaemonEndpoints.KubeletEndpoint.Port),
		Virtual: identity.IsVirtualNode(n.Labels)}
	t.Domain, t.Gateway = domainOf(n.Labels)
	var addrs []string
	for _, a := range n.Status.Addresses {
		if c := canonicalAddr(a.Address); c != "" && !slices.Contains(addrs, c) {
			addrs = append(addrs, c)
		}
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
		if ix.byAddr[a] == nil {
			ix.byAddr[a] = map[string]struct{}{}
		}
		ix.byAddr[a][n.Name] = struct{}{}
	}
	if t.Gateway {
		if ix.gateways[t.Domain] == nil {
			ix.gateways[t.Domain] = map[string]struct{}{}
		}
		ix.gateways[t.Domain][n.Name] = struct{}{}
	}
}

func (ix *NodeIndex) delete(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.dropLocked(name)
}

func (ix *NodeIndex) dropLocked(name string) {
	for _, a := range ix.addrs[name] {
		delete(ix.byAddr[a], name)
		if len(ix.byAddr[a]) == 0 {
			delete(ix.byAddr, a)
		}
	}
	if t, ok := ix.byName[name]; ok && t.Gateway {
		delete(ix.gateways[t.Domain], name)
		if len(ix.gateways[t.Domain]) == 0 {
			delete(ix.gateways, t.Domain)
		}
	}
	delete(ix.addrs, name)
	delete(ix.byName, name)
}

// Node implements NodeResolver.
func (ix *NodeIndex) Node(name string) (Target, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	t, ok := ix.byName[name]
	return t, ok
}

// Claimants implements NodeResolver.
func (ix *NodeIndex) Claimants(addr string) []Target {
	addr = canonicalAddr(addr)
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.targetsLocked(ix.byAddr[addr])
}

// Gateways implements NodeResolver.
func (ix *NodeIndex) Gateways(domain string) []Target {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.targetsLocked(ix.gateways[domain])
}

// targetsLocked returns the named nodes sorted by name.
func (ix *NodeIndex) targetsLocked(names map[string]struct{}) []Target {
	out := make([]Target, 0, len(names))
	for name := range names {
		out = append(out, ix.byName[name])
	}
	sortByName(out)
	return out
}

// canonicalAddr writes an IP address one way (fd00:0::1 and fd00::1, or
// ::ffff:10.0.0.1 and 10.0.0.1, are one address: two nodes listing them
// clash); anything else (a host name) is returned as it is.
func canonicalAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}
