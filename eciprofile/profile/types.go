package profile

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Selector custom resource (selectors.eci.aliyun.com/v1, cluster
// scoped), as manifests/eci-profile/crd.yaml declares it.
const (
	Group    = "eci.aliyun.com"
	Version  = "v1"
	Resource = "selectors"
	Kind     = "Selector"
)

// Selector is one Selector object.
type Selector struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              SelectorSpec `json:"spec"`
}

// SelectorSpec is what a Selector asks for. Empty label selectors match
// every pod (outside the namespaces the webhook never sees).
type SelectorSpec struct {
	NamespaceLabels *metav1.LabelSelector `json:"namespaceLabels,omitempty"`
	ObjectLabels    *metav1.LabelSelector `json:"objectLabels,omitempty"`
	Effect          *Effect               `json:"effect,omitempty"`
	// Priority orders matching Selectors: the highest wins, ties go to
	// the first name in byte order.
	Priority *int32          `json:"priority,omitempty"`
	Policy   *SelectorPolicy `json:"policy,omitempty"`
}

// SelectorPolicy holds at most one policy; none means virtualNodeOnly.
type SelectorPolicy struct {
	VirtualNodeOnly  *struct{}               `json:"virtualNodeOnly,omitempty"`
	NormalNodeOnly   *struct{}               `json:"normalNodeOnly,omitempty"`
	NormalNodePrefer *NormalNodePreferPolicy `json:"normalNodePrefer,omitempty"`
	Fair             *struct{}               `json:"fair,omitempty"`
	// NamespaceResourceLimit is Alibaba's, declared but not implemented
	// there; vnode refuses a Selector that sets it rather than pretend.
	NamespaceResourceLimit *NamespaceResourceLimitPolicy `json:"namespaceResourceLimit,omitempty"`
}

// NormalNodePreferPolicy's ratios are refused for now (not implemented).
type NormalNodePreferPolicy struct {
	CPURatio    *int32 `json:"cpuRatio,omitempty"`
	MemoryRatio *int32 `json:"memoryRatio,omitempty"`
}

// NamespaceResourceLimitPolicy is accepted by the schema only to be refused
// with a clear event.
type NamespaceResourceLimitPolicy struct {
	Namespace string            `json:"namespace,omitempty"`
	Limits    map[string]string `json:"limits,omitempty"`
}

// Effect is what a match adds to the pod (never overwriting its values).
type Effect struct {
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Policy says where a matched pod may or should run.
type Policy string

const (
	// VirtualNodeOnly: nodeSelector type=virtual-kubelet and a toleration
	// of the virtual node's taint.
	VirtualNodeOnly Policy = "virtualNodeOnly"
	// NormalNodeOnly: a required node affinity away from virtual nodes.
	NormalNodeOnly Policy = "normalNodeOnly"
	// NormalNodePrefer: the toleration and a preferred node affinity away
	// from virtual nodes: normal nodes first, overflow to virtual ones.
	NormalNodePrefer Policy = "normalNodePrefer"
	// Fair: the toleration only; the scheduler chooses freely.
	Fair Policy = "fair"
)
