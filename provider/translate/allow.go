package translate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// GuardedAnnotations choose an instance's cloud identity (the RAM role, whose
// credentials its containers receive), network placement (security group,
// vSwitch, public IP) or resource group. ACK accepts them from any pod; vnode
// accepts them only where the admin allows: in the node's config
// (allowed-pod-annotations), or for one namespace by NamespaceAllowedAnnotations.
// A value already within the node's own configuration always passes.
var GuardedAnnotations = []string{
	AnnotationRAMRole,
	AnnotationSecurityGroup,
	AnnotationVSwitch,
	AnnotationResourceGroup,
	AnnotationWithEIP,
	AnnotationEIPInstanceID,
	AnnotationEIPBandwidth,
}

// NamespaceAllowedAnnotations on a Namespace lists (comma-separated) the
// guarded pod annotations its pods may set, beyond the node's config. Only
// who may update Namespaces (cluster admins) can set it.
const NamespaceAllowedAnnotations = "vnode.io/allowed-pod-annotations"

// ReasonAnnotationNotAllowed fails a pod that sets a guarded annotation the
// admin has not allowed.
const ReasonAnnotationNotAllowed = "AnnotationNotAllowed"

// Namespaces gives a pod's Namespace. A lister satisfies it.
type Namespaces interface {
	Namespace(name string) (*corev1.Namespace, error)
}

// CheckAllowList says which entries of a node's allowed-pod-annotations are
// not guarded annotations (a typo would otherwise allow nothing, silently).
func CheckAllowList(keys []string) error {
	for _, k := range keys {
		if !slices.Contains(GuardedAnnotations, k) {
			return fmt.Errorf("allowed-pod-annotations: %q is not an annotation vnode guards (those are %s)", k, strings.Join(GuardedAnnotations, ", "))
		}
	}
	return nil
}

// checkAllowed refuses the guarded annotations of pod that neither the
// node's configuration contains, nor the node's allow-list, nor its
// namespace's NamespaceAllowedAnnotations allows. The namespace is read only
// when the node's own settings do not decide.
func checkAllowed(pod *corev1.Pod, node NodeSettings, namespaces Namespaces) error {
	var asked []string
	for _, k := range GuardedAnnotations {
		v := strings.TrimSpace(pod.Annotations[k])
		if v == "" || withinNode(k, v, node) || slices.Contains(node.AllowedAnnotations, k) {
			continue
		}
		asked = append(asked, k)
	}
	if len(asked) == 0 {
		return nil
	}
	nsAllowed := map[string]bool{}
	if namespaces != nil {
		ns, err := namespaces.Namespace(pod.Namespace)
		if err != nil {
			return fmt.Errorf("reading namespace %s for its %s annotation: %w", pod.Namespace, NamespaceAllowedAnnotations, err)
		}
		for _, k := range strings.Split(ns.Annotations[NamespaceAllowedAnnotations], ",") {
			nsAllowed[strings.TrimSpace(k)] = true
		}
	}
	var refused []string
	for _, k := range asked {
		if !nsAllowed[k] {
			refused = append(refused, k)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	return unsupported(ReasonAnnotationNotAllowed,
		"%s: this virtual node does not let pods choose it (it sets the instance's cloud identity or network). A cluster admin may allow it for namespace %s with the namespace annotation %s=%s, or for every namespace with allowed-pod-annotations in the node's config",
		strings.Join(refused, ", "), pod.Namespace, NamespaceAllowedAnnotations, strings.Join(refused, ","))
}

// withinNode reports whether a guarded annotation's value asks for nothing
// beyond the node's own configuration (eci-profile writes such defaults).
func withinNode(key, value string, node NodeSettings) bool {
	switch key {
	case AnnotationVSwitch:
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(node.VSwitchIDs, s) {
				return false
			}
		}
		return true
	case AnnotationSecurityGroup:
		return value == node.SecurityGroupID
	case AnnotationResourceGroup:
		return value == node.ResourceGroupID
	case AnnotationWithEIP:
		b, err := strconv.ParseBool(value)
		return err == nil && !b // "false" asks for nothing
	}
	// A RAM role, an EIP or its bandwidth is never part of the node's
	// configuration.
	return false
}
