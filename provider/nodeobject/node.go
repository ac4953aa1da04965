// Package nodeobject builds the virtual node's Node object (labels, taints,
// capacity, addresses, daemon endpoint) and keeps its conditions true to
// what the node can do: it is Ready only while ECI answers and, when its
// kubelet API is reached through an edge tunnel, while it holds a tunnel
// session.
package nodeobject

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

// Well-known labels and the taint every vnode carries.
const (
	LabelRole       = "kubernetes.io/role"
	LabelVNodeID    = "k8s.aliyun.com/vnode-id"
	LabelZonePrefix = "vnode.io/zone."
	ReasonReady     = "ECIReachable"
	ReasonNotReady  = "ECIUnreachable"
	ReasonStarting  = "VNodeStarting"
	// ReasonTunnelDown: ECI answers, but the node holds no tunnel session,
	// so the cluster cannot reach its kubelet API (logs, exec, metrics).
	ReasonTunnelDown = "TunnelDisconnected"
	// defaultTunnelInterval: a session check is a memory read, so it can
	// run far more often than the ECI call.
	defaultTunnelInterval = time.Second
	defaultInterval       = 10 * time.Second
)

// Config describes the node.
type Config struct {
	Name          string
	Region        string
	Zones         []string // one per vSwitch; the first is the node's zone label
	VirtualNodeID string
	Taints        []corev1.Taint // in addition to the provider taint
	Capacity      corev1.ResourceList
	InternalIP    string
	KubeletPort   int32
	// KubeletVersion is reported as the node's kubelet version.
	KubeletVersion string
	Labels         map[string]string
}

// Apply fills node (which nodeutil created with its default labels) from cfg.
// Existing labels are kept; cfg wins on conflicts.
func Apply(node *corev1.Node, cfg Config) {
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	labels := map[string]string{
		identity.NodeTypeLabel:             identity.NodeTypeVirtual,
		LabelRole:                          "agent",
		"kubernetes.io/hostname":           cfg.Name,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"node.kubernetes.io/instance-type": "virtual-node",
		corev1.LabelTopologyRegion:         cfg.Region,
		"alpha.service-controller.kubernetes.io/exclude-balancer": "true",
		"node.kubernetes.io/exclude-from-external-load-balancers": "true",
	}
	if len(cfg.Zones) > 0 {
		labels[corev1.LabelTopologyZone] = cfg.Zones[0]
	}
	// The node spans every zone it has a vSwitch in: one label each, so
	// pods can require a zone with nodeAffinity.
	for _, z := range cfg.Zones {
		labels[LabelZonePrefix+z] = "true"
	}
	if cfg.VirtualNodeID != "" {
		labels[LabelVNodeID] = cfg.VirtualNodeID
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	for k, v := range labels {
		node.Labels[k] = v
	}
	node.Spec.Taints = append([]corev1.Taint{{Key: identity.TaintKey, Value: identity.TaintValue, Effect: corev1.TaintEffectNoSchedule}}, cfg.Taints...)
	node.Status.Capacity = cfg.Capacity.DeepCopy()
	node.Status.Allocatable = cfg.Capacity.DeepCopy()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: cfg.InternalIP},
		{Type: corev1.NodeHostName, Address: cfg.Name},
	}
	node.Status.DaemonEndpoints = corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: cfg.KubeletPort}}
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem:         "linux",
		Architecture:            "amd64",
		KubeletVersion:          cfg.KubeletVersion,
		KernelVersion:           "",
		OSImage:                 "Alibaba Cloud Elastic Container Instance",
		ContainerRuntimeVersion: "eci://2018-08-08",
	}
	node.Status.Conditions = conditions(false, ReasonStarting, "vnode is starting", time.Now())
}

func conditions(ready bool, reason, message string, now time.Time) []corev1.NodeCondition {
	t := metav1.NewTime(now)
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	ok := func(typ corev1.NodeConditionType, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: typ, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastHeartbeatTime: t, LastTransitionTime: t}
	}
	return []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: status, Reason: reason, Message: message, LastHeartbeatTime: t, LastTransitionTime: t},
		ok(corev1.NodeMemoryPressure, "NoMemoryPressure", "ECI instances have their own memory"),
		ok(corev1.NodeDiskPressure, "NoDiskPressure", "ECI instances have their own disks"),
		ok(corev1.NodePIDPressure, "NoPIDPressure", "ECI instances have their own PID space"),
		ok(corev1.NodeNetworkUnavailable, "RouteCreated", "ECI instances are attached to the VPC"),
	}
}

// Checker tells whether the cloud can be reached (e.g. a cheap ECI call).
type Checker interface {
	Check(ctx context.Context) error
}

// SessionSource says whether the node holds a tunnel session to at least
// one tunnel server (tunnel.Agent implements it).
type SessionSource interface {
	Connected() bool
}

// Provider implements virtual-kubelet's node.NodeProvider: it checks ECI
// every interval (and the tunnel, if the node depends on one, every
// tunnelInterval) and, when the outcome changes, notifies a copy of the
// node with its Ready condition set and the reason.
type Provider struct {
	checker        Checker
	interval       time.Duration
	tunnel         SessionSource
	tunnelInterval time.Duration
	log            logrus.FieldLogger

	mu     sync.Mutex
	node   *corev1.Node
	eciErr error
	state  *readiness
	notify func(*corev1.Node)
}

// readiness is what the Ready condition says; a change is notified.
type readiness struct {
	ready  bool
	reason string
}

// NewProvider returns a node provider for node (the object Apply filled).
func NewProvider(node *corev1.Node, checker Checker, interval time.Duration, log logrus.FieldLogger) *Provider {
	if interval <= 0 {
		interval = defaultInterval
	}
	// Its own copy: virtual-kubelet keeps (and reads) the object it was given.
	return &Provider{checker: checker, interval: interval, log: log, node: node.DeepCopy()}
}

// WithTunnel makes the node Ready only while src holds a session: a node
// whose kubelet API the cluster reaches only through the tunnel cannot
// serve logs, exec or metrics without one. Call it before
// NotifyNodeStatus. interval <= 0 means every second.
func (p *Provider) WithTunnel(src SessionSource, interval time.Duration) *Provider {
	if interval <= 0 {
		interval = defaultTunnelInterval
	}
	p.tunnel, p.tunnelInterval = src, interval
	return p
}

// Ping reports whether ECI answers; virtual-kubelet calls it periodically.
func (p *Provider) Ping(ctx context.Context) error {
	return p.checker.Check(ctx)
}

// NotifyNodeStatus starts the health loop; it does not block.
func (p *Provider) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
	go p.run(ctx)
}

func (p *Provider) run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	var tunnelTick <-chan time.Time
	if p.tunnel != nil {
		tt := time.NewTicker(p.tunnelInterval)
		defer tt.Stop()
		tunnelTick = tt.C
	}
	p.checkECI(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.checkECI(ctx)
		case <-tunnelTick:
			p.update()
		}
	}
}

// checkECI calls ECI and updates the condition.
func (p *Provider) checkECI(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, p.interval)
	err := p.checker.Check(cctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	p.eciErr = err
	p.mu.Unlock()
	p.update()
}

// update recomputes Ready from the last ECI answer and the tunnel, and
// notifies if it changed. ECI comes first: without it nothing works.
func (p *Provider) update() {
	p.mu.Lock()
	err := p.eciErr
	st := readiness{ready: true, reason: ReasonReady}
	msg := "ECI API reachable; vnode is posting ready status"
	switch {
	case err != nil:
		st = readiness{ready: false, reason: ReasonNotReady}
		msg = fmt.Sprintf("ECI API unreachable, new pods cannot start: %v", err)
	case p.tunnel != nil && !p.tunnel.Connected():
		st = readiness{ready: false, reason: ReasonTunnelDown}
		msg = "no session to any edge tunnel server: the cluster cannot reach this node's kubelet API (logs, exec, metrics)"
	case p.tunnel != nil:
		msg = "ECI API reachable and edge tunnel connected; vnode is posting ready status"
	}
	if p.state != nil && *p.state == st {
		p.mu.Unlock()
		return
	}
	p.state = &st
	log := p.log.WithField("reason", st.reason)
	switch {
	case st.ready:
		log.Info("marking the node ready")
	case err != nil:
		log.WithError(err).Warn("ECI unreachable; marking the node not ready")
	default:
		log.Warn("no edge tunnel session; marking the node not ready")
	}
	p.node.Status.Conditions = conditions(st.ready, st.reason, msg, time.Now())
	n := p.node.DeepCopy()
	cb := p.notify
	p.mu.Unlock()
	cb(n)
}
