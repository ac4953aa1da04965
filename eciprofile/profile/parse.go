package profile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vnode-project/vnode/provider/translate"
)

// The ConfigMap form: kube-system/eci-profile, every value a string.
const (
	ConfigMapNamespace = "kube-system"
	ConfigMapName      = "eci-profile"
	KeySelectors       = "selectors"
)

// Rule is one parsed selector of either form.
type Rule struct {
	Name string
	// Namespace and Object are nil when the selector leaves them out.
	Namespace labels.Selector
	Object    labels.Selector
	Effect    Effect
	Policy    Policy
	Priority  int32
}

// EffectOnly reports whether a ConfigMap selector names no labels at all:
// it then adds its effect to every pod that goes to virtual nodes, and
// sends none there itself.
func (r *Rule) EffectOnly() bool { return r.Namespace == nil && r.Object == nil }

func (r *Rule) matches(nsLabels, podLabels map[string]string) bool {
	if r.Namespace != nil && !r.Namespace.Matches(labels.Set(nsLabels)) {
		return false
	}
	if r.Object != nil && !r.Object.Matches(labels.Set(podLabels)) {
		return false
	}
	return true
}

// Profile is a parsed ConfigMap: its selectors in order and the ECI
// annotations its defaults become.
type Profile struct {
	Selectors []Rule
	// Defaults are pod annotations vnode-kubelet reads (provider/translate).
	Defaults map[string]string
}

// configMapSelector is one element of the `selectors` JSON array.
type configMapSelector struct {
	Name              string                `json:"name"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	ObjectSelector    *metav1.LabelSelector `json:"objectSelector,omitempty"`
	Effect            *Effect               `json:"effect,omitempty"`
}

// defaultKeys are the ConfigMap's other keys: the annotation each becomes
// ("" when vnode-kubelet has nothing that reads it: accepted and checked,
// so a typo is an error rather than silently ignored).
var defaultKeys = map[string]string{
	"vSwitchIds":           translate.AnnotationVSwitch,
	"vswitchIds":           translate.AnnotationVSwitch, // an older doc's spelling
	"securityGroupId":      translate.AnnotationSecurityGroup,
	"vpcId":                "",
	"enableClusterIp":      "",
	"enableHybridMode":     "",
	"enableLinuxArm64Node": "",
	"enableLogController":  "",
	"slsMachineGroup":      "",
	"enablePVCController":  "",
	"enablePrivateZone":    "",
	"enableReuseSSLKey":    "",
	"featureGates":         "",
}

// ParseConfigMap parses the ConfigMap's data. Any error names the key or
// the selector at fault; nothing of a ConfigMap with an error applies.
func ParseConfigMap(data map[string]string) (*Profile, error) {
	p := &Profile{Defaults: map[string]string{}}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		v := data[k]
		if k == KeySelectors {
			sels, err := parseSelectorsJSON(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k, err))
			}
			p.Selectors = sels
			continue
		}
		annotation, known := defaultKeys[k]
		if !known {
			errs = append(errs, fmt.Errorf("unknown key %q (known: selectors, %s)", k, strings.Join(knownDefaultKeys(), ", ")))
			continue
		}
		if err := checkDefault(k, v); err != nil {
			errs = append(errs, err)
			continue
		}
		if annotation != "" && strings.TrimSpace(v) != "" {
			p.Defaults[annotation] = strings.TrimSpace(v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

func knownDefaultKeys() []string {
	ks := make([]string, 0, len(defaultKeys))
	for k := range defaultKeys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func checkDefault(key, v string) error {
	v = strings.TrimSpace(v)
	switch {
	case key == "vSwitchIds" || key == "vswitchIds":
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" && !strings.HasPrefix(s, "vsw-") {
				return fmt.Errorf("%s: %q is not a vSwitch id (vsw-...)", key, s)
			}
		}
	case key == "securityGroupId":
		if v != "" && !strings.HasPrefix(v, "sg-") {
			return fmt.Errorf("%s: %q is not a security group id (sg-...)", key, v)
		}
	case strings.HasPrefix(key, "enable"):
		if v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return fmt.Errorf("%s: %q is not true or false", key, v)
			}
		}
	case key == "featureGates":
		for _, g := range strings.Split(v, ",") {
			if g = strings.TrimSpace(g); g == "" {
				continue
			}
			name, val, ok := strings.Cut(g, "=")
			if !ok {
				return fmt.Errorf("%s: %q is not Name=true|false", key, g)
			}
			if _, err := strconv.ParseBool(val); err != nil || name == "" {
				return fmt.Errorf("%s: %q is not Name=true|false", key, g)
			}
		}
	}
	return nil
}

func parseSelectorsJSON(v string) ([]Rule, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	var raw []configMapSelector
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a JSON array of selectors: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON array")
	}
	rules := make([]Rule, 0, len(raw))
	seen := map[string]bool{}
	var errs []error
	for i, s := range raw {
		if s.Name == "" {
			errs = append(errs, fmt.Errorf("selector %d: name is required", i))
			continue
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("selector %q: name used twice", s.Name))
			continue
		}
		seen[s.Name] = true
		r, err := newRule(s.Name, s.NamespaceSelector, s.ObjectSelector, s.Effect, VirtualNodeOnly, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("selector %q: %w", s.Name, err))
			continue
		}
		if r.EffectOnly() && len(r.Effect.Annotations)+len(r.Effect.Labels) == 0 {
			errs = append(errs, fmt.Errorf("selector %q: neither namespaceSelector, objectSelector nor effect: it would do nothing", s.Name))
			continue
		}
		rules = append(rules, r)
	}
	return rules, errors.Join(errs...)
}

// ParseSelector checks one Selector object and returns its rule.
func ParseSelector(s *Selector) (Rule, error) {
	policy := VirtualNodeOnly
	if p := s.Spec.Policy; p != nil {
		var set []Policy
		if p.VirtualNodeOnly != nil {
			set = append(set, VirtualNodeOnly)
		}
		if p.NormalNodeOnly != nil {
			set = append(set, NormalNodeOnly)
		}
		if p.NormalNodePrefer != nil {
			set = append(set, NormalNodePrefer)
			if p.NormalNodePrefer.CPURatio != nil || p.NormalNodePrefer.MemoryRatio != nil {
				return Rule{}, errors.New("policy normalNodePrefer: cpuRatio and memoryRatio are not supported yet; remove them")
			}
		}
		if p.Fair != nil {
			set = append(set, Fair)
		}
		if p.NamespaceResourceLimit != nil {
			return Rule{}, errors.New("policy namespaceResourceLimit is not supported yet")
		}
		if len(set) > 1 {
			return Rule{}, fmt.Errorf("policy sets %d policies (%v); set at most one", len(set), set)
		}
		if len(set) == 1 {
			policy = set[0]
		}
	}
	var prio int32
	if s.Spec.Priority != nil {
		prio = *s.Spec.Priority
	}
	return newRule(s.Name, s.Spec.NamespaceLabels, s.Spec.ObjectLabels, s.Spec.Effect, policy, prio)
}

// DecodeSelector decodes a Selector from its JSON, refusing fields the
// type does not know (a misspelt policy must not silently mean the default).
func DecodeSelector(b []byte) (*Selector, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Selector
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decoding Selector: %w", err)
	}
	return &s, nil
}

func newRule(name string, ns, obj *metav1.LabelSelector, eff *Effect, policy Policy, prio int32) (Rule, error) {
	r := Rule{Name: name, Policy: policy, Priority: prio}
	var err error
	if ns != nil {
		if r.Namespace, err = metav1.LabelSelectorAsSelector(ns); err != nil {
			return Rule{}, fmt.Errorf("namespace selector: %w", err)
		}
	}
	if obj != nil {
		if r.Object, err = metav1.LabelSelectorAsSelector(obj); err != nil {
			return Rule{}, fmt.Errorf("object selector: %w", err)
		}
	}
	if eff != nil {
		for k := range eff.Annotations {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return Rule{}, fmt.Errorf("effect annotation %q: %s", k, strings.Join(errs, "; "))
			}
		}
		for k, v := range eff.Labels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return Rule{}, fmt.Errorf("effect label %q: %s", k, strings.Join(errs, "; "))
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return Rule{}, fmt.Errorf("effect label %q value %q: %s", k, v, strings.Join(errs, "; "))
			}
		}
		r.Effect = Effect{Annotations: eff.Annotations, Labels: eff.Labels}
	}
	return r, nil
}
