package vnodectl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/provider/nodeobject"
)

// excludeExpression is seed 004's node affinity term: not on a node
// labelled type=virtual-kubelet.
var excludeExpression = corev1.NodeSelectorRequirement{
	Key: identity.NodeTypeLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{identity.NodeTypeVirtual},
}

func newDaemonSetsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "daemonsets", Short: "Keep DaemonSets off virtual nodes"}
	var all bool
	var namespace string
	exclude := &cobra.Command{
		Use:   "exclude [NAME...|--all]",
		Short: "Add the node affinity `type NotIn virtual-kubelet` to DaemonSets (NAME or NAMESPACE/NAME; --all: every DaemonSet that could land on a virtual node)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return fmt.Errorf("name DaemonSets (NAME or NAMESPACE/NAME, default namespace %s) or pass --all, not both or neither", namespace)
			}
			a, err := g.admin(cmd.Context())
			if err != nil {
				return err
			}
			return g.excludeDaemonSets(cmd.Context(), a, namespace, args, all)
		},
	}
	exclude.Flags().BoolVar(&all, "all", false, "every DaemonSet in every namespace that would land on a virtual node")
	exclude.Flags().StringVarP(&namespace, "namespace", "n", metav1.NamespaceSystem, "the namespace of DaemonSets named without one")
	cmd.AddCommand(exclude)
	return cmd
}

func (g *globals) excludeDaemonSets(ctx context.Context, a *admin, namespace string, names []string, all bool) error {
	var targets []appsv1.DaemonSet
	if all {
		list, err := a.client.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing DaemonSets: %w", err)
		}
		for _, ds := range list.Items {
			if landsOnVirtualNode(&ds) {
				targets = append(targets, ds)
			}
		}
	} else {
		for _, n := range names {
			ns, name := namespace, n
			if before, after, ok := strings.Cut(n, "/"); ok {
				ns, name = before, after
			}
			ds, err := a.client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("DaemonSet %s/%s: %w", ns, name, err)
			}
			targets = append(targets, *ds)
		}
	}
	for _, ds := range targets {
		affinity, changed := excludeVirtualNodes(ds.Spec.Template.Spec.Affinity)
		if !changed {
			fmt.Fprintf(g.out, "DaemonSet %s/%s already excludes virtual nodes\n", ds.Namespace, ds.Name)
			continue
		}
		patch, err := json.Marshal(map[string]any{
			// The resourceVersion makes a concurrent edit fail instead of
			// being overwritten.
			"metadata": map[string]any{"resourceVersion": ds.ResourceVersion},
			"spec":     map[string]any{"template": map[string]any{"spec": map[string]any{"affinity": affinity}}},
		})
		if err != nil {
			return err
		}
		if g.dry {
			fmt.Fprintf(g.out, "would patch DaemonSet %s/%s (strategic merge):\n%s\n", ds.Namespace, ds.Name, patch)
			continue
		}
		if _, err := a.client.AppsV1().DaemonSets(ds.Namespace).Patch(ctx, ds.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
			return fmt.Errorf("patching DaemonSet %s/%s: %w", ds.Namespace, ds.Name, err)
		}
		fmt.Fprintf(g.out, "DaemonSet %s/%s now excludes virtual nodes\n", ds.Namespace, ds.Name)
	}
	return nil
}

// excludeVirtualNodes adds the NotIn expression to every required term
// (terms are ORed, so each needs it), or makes one term with it.
func excludeVirtualNodes(in *corev1.Affinity) (*corev1.Affinity, bool) {
	out := in.DeepCopy()
	if out == nil {
		out = &corev1.Affinity{}
	}
	if out.NodeAffinity == nil {
		out.NodeAffinity = &corev1.NodeAffinity{}
	}
	req := out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if req == nil || len(req.NodeSelectorTerms) == 0 {
		out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{excludeExpression}}},
		}
		return out, true
	}
	changed := false
	for i := range req.NodeSelectorTerms {
		term := &req.NodeSelectorTerms[i]
		has := false
		for _, e := range term.MatchExpressions {
			if e.Key == excludeExpression.Key && e.Operator == excludeExpression.Operator && contains(e.Values, identity.NodeTypeVirtual) {
				has = true
			}
		}
		if !has {
			term.MatchExpressions = append(term.MatchExpressions, excludeExpression)
			changed = true
		}
	}
	return out, changed
}

// virtualNode is what a vnode Node looks like to the scheduler: its
// labels and taint, as provider/nodeobject makes them.
func virtualNode() *corev1.Node {
	n := &corev1.Node{}
	nodeobject.Apply(n, nodeobject.Config{Name: "virtual-node", Region: "region", Zones: []string{"zone"}})
	return n
}

// landsOnVirtualNode: the DaemonSet's pods tolerate the virtual node's
// taint and its node selector and required affinity match its labels.
func landsOnVirtualNode(ds *appsv1.DaemonSet) bool {
	node := virtualNode()
	spec := &ds.Spec.Template.Spec
	for _, t := range node.Spec.Taints {
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated := false
		for _, tol := range spec.Tolerations {
			if tol.ToleratesTaint(klog.Background(), &t, false) {
				tolerated = true
			}
		}
		if !tolerated {
			return false
		}
	}
	pod := &corev1.Pod{Spec: *spec}
	match, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)
	return err == nil && match
}

// daemonSets lists DaemonSets that would land on a virtual node.
func (c *checklist) daemonSets(ctx context.Context, a *admin) {
	list, err := a.client.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		c.fail("check that the admin kubeconfig may list DaemonSets", "listing DaemonSets: %v", err)
		return
	}
	var bad []string
	for i := range list.Items {
		if landsOnVirtualNode(&list.Items[i]) {
			bad = append(bad, list.Items[i].Namespace+"/"+list.Items[i].Name)
		}
	}
	if len(bad) > 0 {
		c.fail("`vnode daemonsets exclude "+strings.Join(bad, " ")+"` (or --all)", "no DaemonSet would land on a virtual node: %s would", strings.Join(bad, ", "))
		return
	}
	c.pass("no DaemonSet would land on a virtual node")
}
