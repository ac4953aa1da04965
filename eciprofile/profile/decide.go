package profile

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/vnode-project/vnode/internal/identity"
)

// Set is the selectors in force: the Selector objects and the ConfigMap.
// It is immutable once built, so the webhook reads it without locks.
type Set struct {
	selectors []Rule // highest priority first, ties by name
	profile   Profile
}

// NewSet orders the Selectors' rules so the winner never depends on the
// order they arrived in: highest priority first, ties by name.
func NewSet(selectors []Rule, profile *Profile) *Set {
	s := &Set{selectors: append([]Rule(nil), selectors...)}
	sort.SliceStable(s.selectors, func(i, j int) bool {
		a, b := s.selectors[i], s.selectors[j]
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Name < b.Name
	})
	if profile != nil {
		s.profile = *profile
	}
	return s
}

// Match is one selector that matched a pod.
type Match struct {
	Form string // FormSelector or FormConfigMap
	Rule *Rule
}

// The two forms, as metrics and logs name them.
const (
	FormSelector  = "selector"
	FormConfigMap = "configmap"
)

// Decision is what Decide found for a pod.
type Decision struct {
	// Policy is the placement: set by the first match that places (the
	// Selector winner, else the first ConfigMap selector that names
	// labels); "" when none did.
	Policy  Policy
	Matches []Match
	// Defaults are the ConfigMap's ECI annotations, for pods sent to
	// virtual nodes.
	Defaults map[string]string
}

// Decide finds the selectors matching a pod: the one winning Selector, then
// every ConfigMap selector in order. ConfigMap selectors without labels,
// and the ConfigMap's ECI defaults, apply only to pods that may run on
// virtual nodes.
func (s *Set) Decide(nsLabels map[string]string, pod *corev1.Pod) Decision {
	var d Decision
	for i := range s.selectors {
		if r := &s.selectors[i]; r.matches(nsLabels, pod.Labels) {
			d.Policy = r.Policy
			d.Matches = append(d.Matches, Match{Form: FormSelector, Rule: r})
			break
		}
	}
	var effectOnly []*Rule
	for i := range s.profile.Selectors {
		r := &s.profile.Selectors[i]
		if r.EffectOnly() {
			effectOnly = append(effectOnly, r)
			continue
		}
		if r.matches(nsLabels, pod.Labels) {
			if d.Policy == "" {
				d.Policy = r.Policy
			}
			d.Matches = append(d.Matches, Match{Form: FormConfigMap, Rule: r})
		}
	}
	if d.Policy.MayUseVirtualNodes() || pod.Spec.NodeSelector[identity.NodeTypeLabel] == identity.NodeTypeVirtual {
		for _, r := range effectOnly {
			d.Matches = append(d.Matches, Match{Form: FormConfigMap, Rule: r})
		}
		if len(s.profile.Defaults) > 0 {
			d.Defaults = s.profile.Defaults
		}
	}
	return d
}

// MayUseVirtualNodes reports whether the policy lets a pod run on a
// virtual node.
func (p Policy) MayUseVirtualNodes() bool {
	return p == VirtualNodeOnly || p == NormalNodePrefer || p == Fair
}

// Apply mutates pod as d says, add-only: a value the pod already has, or an
// earlier match added, is never changed. It reports whether anything
// changed.
func (d Decision) Apply(pod *corev1.Pod) bool {
	changed := false
	switch d.Policy {
	case VirtualNodeOnly:
		changed = addNodeSelector(pod) || changed
		changed = addToleration(pod) || changed
	case NormalNodeOnly:
		changed = addRequiredAway(pod) || changed
	case NormalNodePrefer:
		changed = addToleration(pod) || changed
		changed = addPreferredAway(pod) || changed
	case Fair:
		changed = addToleration(pod) || changed
	}
	for _, m := range d.Matches {
		changed = addAll(&pod.Annotations, m.Rule.Effect.Annotations) || changed
		changed = addAll(&pod.Labels, m.Rule.Effect.Labels) || changed
	}
	changed = addAll(&pod.Annotations, d.Defaults) || changed
	return changed
}

func addAll(dst *map[string]string, src map[string]string) bool {
	changed := false
	for k, v := range src {
		if _, ok := (*dst)[k]; ok {
			continue
		}
		if *dst == nil {
			*dst = map[string]string{}
		}
		(*dst)[k] = v
		changed = true
	}
	return changed
}

// addNodeSelector targets virtual nodes unless the pod says otherwise
// about the type label.
func addNodeSelector(pod *corev1.Pod) bool {
	return addAll(&pod.Spec.NodeSelector, map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual})
}

// addToleration tolerates the virtual node's own taint, and only it: other
// taints on a virtual node are the admin's way to reserve it.
func addToleration(pod *corev1.Pod) bool {
	taint := corev1.Taint{Key: identity.TaintKey, Value: identity.TaintValue, Effect: corev1.TaintEffectNoSchedule}
	for i := range pod.Spec.Tolerations {
		if pod.Spec.Tolerations[i].ToleratesTaint(klog.Background(), &taint, false) {
			return false
		}
	}
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Key: identity.TaintKey, Operator: corev1.TolerationOpExists})
	return true
}

func awayFromVirtual() corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: identity.NodeTypeLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{identity.NodeTypeVirtual}}
}

func nodeAffinity(pod *corev1.Pod) *corev1.NodeAffinity {
	if pod.Spec.Affinity == nil {
		pod.Spec.Affinity = &corev1.Affinity{}
	}
	if pod.Spec.Affinity.NodeAffinity == nil {
		pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	return pod.Spec.Affinity.NodeAffinity
}

// addRequiredAway keeps the pod off virtual nodes, unless the pod already
// has a nodeSelector on the type label or required node affinity of its
// own: its own placement wins.
func addRequiredAway(pod *corev1.Pod) bool {
	if _, ok := pod.Spec.NodeSelector[identity.NodeTypeLabel]; ok {
		return false
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		return false
	}
	nodeAffinity(pod).RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{awayFromVirtual()}}},
	}
	return true
}

// addPreferredAway makes normal nodes score higher, unless the pod already
// states a preference about the type label.
func addPreferredAway(pod *corev1.Pod) bool {
	if _, ok := pod.Spec.NodeSelector[identity.NodeTypeLabel]; ok {
		return false
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		for _, t := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			for _, e := range t.Preference.MatchExpressions {
				if e.Key == identity.NodeTypeLabel {
					return false
				}
			}
		}
	}
	na := nodeAffinity(pod)
	na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution,
		corev1.PreferredSchedulingTerm{Weight: 100, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{awayFromVirtual()}}})
	return true
}
