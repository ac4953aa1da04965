package translate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vnode-project/vnode/eci/model"
)

// Objects gives the objects a pod references. Listers satisfy it.
type Objects interface {
	ConfigMap(namespace, name string) (*corev1.ConfigMap, error)
	Secret(namespace, name string) (*corev1.Secret, error)
}

// ResolveEnv resolves a container's envFrom and env as the kubelet does:
// envFrom first, then env (which wins), $(VAR) references expanded against
// what came before. status.podIP and status.hostIP are left to ECI (an ECI
// instance is its own host); resourceFieldRef is computed from the
// container's resources, which virtual-kubelet leaves empty. note, if not
// nil, hears of missing configMaps, secrets and keys (see Sources.Note).
func ResolveEnv(pod *corev1.Pod, c *corev1.Container, objs Objects, note func(reason, message string)) ([]model.EnvVar, error) {
	var out []model.EnvVar
	index := map[string]int{}
	set := func(v model.EnvVar) {
		if i, ok := index[v.Name]; ok {
			out[i] = v
			return
		}
		index[v.Name] = len(out)
		out = append(out, v)
	}
	for _, from := range c.EnvFrom {
		data, err := envFromData(pod.Namespace, from, objs, note)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := from.Prefix + k
			// The kubelet skips keys that are not valid variable names.
			if len(validation.IsEnvVarName(name)) > 0 {
				continue
			}
			set(model.EnvVar{Name: name, Value: data[k]})
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(model.EnvVar{Name: e.Name, Value: expand(e.Value, out, index)})
			continue
		}
		v, ok, err := resolveValueFrom(pod, c, e, objs, note)
		if err != nil {
			return nil, err
		}
		if ok {
			v.Name = e.Name
			set(v)
		}
	}
	return out, nil
}

func envFromData(ns string, from corev1.EnvFromSource, objs Objects, note func(reason, message string)) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := objs.ConfigMap(ns, from.ConfigMapRef.Name)
		if apierrors.IsNotFound(err) {
			noteMissing(note, "configmap", ns, from.ConfigMapRef.Name, "", optional(from.ConfigMapRef.Optional))
		}
		if err != nil {
			if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, missing("configmap", ns, from.ConfigMapRef.Name, err)
		}
		out := make(map[string]string, len(cm.Data)+len(cm.BinaryData))
		for k, v := range cm.Data {
			out[k] = v
		}
		return out, nil
	case from.SecretRef != nil:
		s, err := objs.Secret(ns, from.SecretRef.Name)
		if apierrors.IsNotFound(err) {
			noteMissing(note, "secret", ns, from.SecretRef.Name, "", optional(from.SecretRef.Optional))
		}
		if err != nil {
			if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
				return nil, nil
			}
			return nil, missing("secret", ns, from.SecretRef.Name, err)
		}
		out := make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func resolveValueFrom(pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar, objs Objects, note func(reason, message string)) (model.EnvVar, bool, error) {
	vf := e.ValueFrom
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		return keyRef(e.Name, "configmap", pod.Namespace, ref.Name, ref.Key, ref.Optional, note, func() (map[string][]byte, error) {
			cm, err := objs.ConfigMap(pod.Namespace, ref.Name)
			if err != nil {
				return nil, err
			}
			data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
			for k, v := range cm.BinaryData {
				data[k] = v
			}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
			return data, nil
		})
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		return keyRef(e.Name, "secret", pod.Namespace, ref.Name, ref.Key, ref.Optional, note, func() (map[string][]byte, error) {
			s, err := objs.Secret(pod.Namespace, ref.Name)
			if err != nil {
				return nil, err
			}
			return s.Data, nil
		})
	case vf.FieldRef != nil:
		return fieldRef(pod, e.Name, vf.FieldRef.FieldPath)
	case vf.ResourceFieldRef != nil:
		v, err := resourceFieldRef(pod, c, vf.ResourceFieldRef)
		if err != nil {
			return model.EnvVar{}, false, err
		}
		return model.EnvVar{Value: v}, true, nil
	}
	return model.EnvVar{}, false, unsupported("UnsupportedEnvSource", "env %s: valueFrom names no source", e.Name)
}

// keyRef resolves one key of a configMap or secret for env var name; a
// missing object or key is skipped when optional, refused otherwise.
func keyRef(name, kind, ns, obj, key string, opt *bool, note func(reason, message string), fetch func() (map[string][]byte, error)) (model.EnvVar, bool, error) {
	data, err := fetch()
	if apierrors.IsNotFound(err) {
		noteMissing(note, kind, ns, obj, "", optional(opt))
	}
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return model.EnvVar{}, false, nil
		}
		return model.EnvVar{}, false, missing(kind, ns, obj, err)
	}
	v, ok := data[key]
	if !ok {
		noteMissing(note, kind, ns, obj, key, optional(opt))
		if optional(opt) {
			return model.EnvVar{}, false, nil
		}
		reason := "MissingConfigMapKey"
		if kind == "secret" {
			reason = "MissingSecretKey"
		}
		return model.EnvVar{}, false, unsupported(reason, "env %s: %s %s/%s has no key %q; add it or mark the reference optional", name, kind, ns, obj, key)
	}
	return model.EnvVar{Value: string(v)}, true, nil
}

// FieldValue resolves a downward-API field path that is known before the
// instance exists; ok is false for status.podIP/hostIP (only ECI knows them).
func FieldValue(pod *corev1.Pod, path string) (value string, ok bool, err error) {
	switch path {
	case "metadata.name":
		return pod.Name, true, nil
	case "metadata.namespace":
		return pod.Namespace, true, nil
	case "metadata.uid":
		return string(pod.UID), true, nil
	case "spec.nodeName":
		return pod.Spec.NodeName, true, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, true, nil
	case "status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs":
		return "", false, nil
	case "metadata.labels":
		return formatMap(pod.Labels), true, nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), true, nil
	}
	if k, okk := subscript(path, "metadata.labels"); okk {
		return pod.Labels[k], true, nil
	}
	if k, okk := subscript(path, "metadata.annotations"); okk {
		return pod.Annotations[k], true, nil
	}
	return "", false, unsupported("UnsupportedFieldPath", "field path %q is not supported by the downward API", path)
}

func fieldRef(pod *corev1.Pod, name, path string) (model.EnvVar, bool, error) {
	v, known, err := FieldValue(pod, path)
	if err != nil {
		return model.EnvVar{}, false, fmt.Errorf("env %s: %w", name, err)
	}
	if !known {
		// An ECI instance is its own host: both resolve to the instance IP.
		return model.EnvVar{FieldPath: "status.podIP"}, true, nil
	}
	return model.EnvVar{Value: v}, true, nil
}

func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	key, ok := strings.CutSuffix(rest, "']")
	return key, ok
}

// formatMap renders labels/annotations as the kubelet's downward API does.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + strconv.Quote(m[k]))
	}
	return b.String()
}

// resourceFieldRef computes limits/requests of a container as the kubelet
// does: a missing limit falls back to the node's allocatable, which for an
// ECI instance is the instance's size; here the container's request (or the
// default 1 vCPU / 2 GiB a container gets) stands in for it.
func resourceFieldRef(pod *corev1.Pod, self *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	c := self
	if ref.ContainerName != "" && ref.ContainerName != self.Name {
		c = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				c = &pod.Spec.Containers[i]
			}
		}
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == ref.ContainerName {
				c = &pod.Spec.InitContainers[i]
			}
		}
		if c == nil {
			return "", unsupported("UnsupportedResourceFieldRef", "resourceFieldRef names container %q, which the pod does not have", ref.ContainerName)
		}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", unsupported("UnsupportedResourceFieldRef", "resourceFieldRef %q is not limits.* or requests.*", ref.Resource)
	}
	name := corev1.ResourceName(res)
	var q resource.Quantity
	var have bool
	switch kind {
	case "limits":
		q, have = c.Resources.Limits[name]
		if !have {
			q, have = c.Resources.Requests[name]
		}
	case "requests":
		q, have = c.Resources.Requests[name]
	default:
		return "", unsupported("UnsupportedResourceFieldRef", "resourceFieldRef %q is not limits.* or requests.*", ref.Resource)
	}
	if !have {
		switch name {
		case corev1.ResourceCPU:
			q = resource.MustParse("1")
			if kind == "requests" {
				q = resource.MustParse("0")
			}
		case corev1.ResourceMemory:
			q = resource.MustParse("2Gi")
			if kind == "requests" {
				q = resource.MustParse("0")
			}
		case corev1.ResourceEphemeralStorage:
			q = resource.MustParse("30Gi")
			if kind == "requests" {
				q = resource.MustParse("0")
			}
		default:
			return "", unsupported("UnsupportedResourceFieldRef", "resourceFieldRef %q: resource %s is not supported", ref.Resource, res)
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	// The kubelet rounds up (ceil) to a whole number of divisors.
	v := float64(q.MilliValue()) / float64(divisor.MilliValue())
	return strconv.FormatInt(int64(ceil(v)), 10), nil
}

func ceil(v float64) float64 {
	i := float64(int64(v))
	if v > i {
		return i + 1
	}
	return i
}

// expand replaces $(VAR) with earlier variables, $$ with $, as the kubelet.
func expand(s string, vars []model.EnvVar, index map[string]int) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if j, ok := index[name]; ok && vars[j].FieldPath == "" {
				b.WriteString(vars[j].Value)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func optional(b *bool) bool { return b != nil && *b }

// noteMissing tells note (if set) that a configMap or secret, or its key
// when key is set, is missing, with virtual-kubelet's event reasons
// (Optional|Mandatory)(ConfigMap|Secret)(Key)NotFound, so tools and people
// who know them from other virtual kubelets read ours alike.
func noteMissing(note func(reason, message string), kind, ns, name, key string, opt bool) {
	if note == nil {
		return
	}
	reason := "Mandatory"
	if opt {
		reason = "Optional"
	}
	if kind == "secret" {
		reason += "Secret"
	} else {
		reason += "ConfigMap"
	}
	what := fmt.Sprintf("%s %s/%s", kind, ns, name)
	if key != "" {
		reason += "Key"
		what = fmt.Sprintf("key %q of %s", key, what)
	}
	msg := what + " not found"
	if opt {
		msg += "; the optional reference is skipped"
	}
	note(reason+"NotFound", msg)
}

func missing(kind, ns, name string, err error) error {
	if apierrors.IsNotFound(err) {
		reason := "MissingConfigMap"
		if kind == "secret" {
			reason = "MissingSecret"
		}
		return unsupported(reason, "%s %s/%s does not exist; create it or mark the reference optional", kind, ns, name)
	}
	return fmt.Errorf("reading %s %s/%s: %w", kind, ns, name, err)
}
