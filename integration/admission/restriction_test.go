package admission

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
)

const ns = "default"

// policyDenied is how the API server words a ValidatingAdmissionPolicy's
// refusal; RBAC's refusals never say it.
const policyDenied = "ValidatingAdmissionPolicy 'vnode-restriction-"

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// clientAs is a client authenticating with a client certificate for user in
// groups, as a virtual node's TLS bootstrap would give it.
func clientAs(t *testing.T, cp *controlplane.ControlPlane, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg, err := cp.UserConfig(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func vnodeClient(t *testing.T, cp *controlplane.ControlPlane, name string) kubernetes.Interface {
	return clientAs(t, cp, identity.VNodeUser(name), identity.VNodesGroup)
}

func virtualNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{identity.NodeTypeLabel: identity.NodeTypeVirtual}}}
}

func boundPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}},
	}
}

func mergePatch(v string) []byte { return []byte(v) }

// TestVNodeRestriction performs, as system:vnode:a, every write the
// ClusterRole system:vnode lets it make on node b's objects (and on objects
// of no node), and checks that vnode-restriction refuses each while the same
// write on a's own objects passes. Without the policies every refused write
// below succeeds: RBAC alone grants them cluster-wide.
func TestVNodeRestriction(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{WithoutScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := cp.Kubectl(ctx, "apply", "-k", filepath.Join(moduleRoot(), "manifests", "vnode")).CombinedOutput(); err != nil {
		t.Fatalf("applying manifests/vnode: %v\n%s", err, out)
	}
	if err := cp.CreateNamespace(ctx, ns); err != nil { // waits for its default service account
		t.Fatal(err)
	}
	admin := cp.Client
	a, b := vnodeClient(t, cp, "a"), vnodeClient(t, cp, "b")

	// Each node registers itself; a real kubelet's Node has no vnode label.
	for _, c := range []struct {
		client kubernetes.Interface
		node   *corev1.Node
	}{{a, virtualNode("a")}, {b, virtualNode("b")}, {admin, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "real"}}}} {
		if _, err := c.client.CoreV1().Nodes().Create(ctx, c.node, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating Node %s: %v", c.node.Name, err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range []*corev1.Pod{boundPod("pa", "a"), boundPod("pb", "b"), boundPod("unbound", "")} {
		created, err := admin.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating pod %s: %v", p.Name, err)
		}
		pods[p.Name] = created
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim", Namespace: ns, Annotations: map[string]string{"owner": "team"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if _, err := admin.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkTypes(ctx, t, cp)
	waitEnforced(ctx, t, a)

	nodes := a.CoreV1().Nodes()
	// A node writes a pod only through pods/status (status, and the ECI
	// annotations with it) and by the final delete.
	statusOf := func(c kubernetes.Interface) func(name string, change func(*corev1.Pod)) error {
		return func(name string, change func(*corev1.Pod)) error {
			p, err := admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			change(p)
			_, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		}
	}
	podStatus := statusOf(a)
	annotate := func(k, v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { metav1.SetMetaDataAnnotation(&p.ObjectMeta, k, v) }
	}
	message := func(m string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Status.Message = m } }
	claimPatch := func(patch string) error {
		_, err := a.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "claim", types.MergePatchType, mergePatch(patch), metav1.PatchOptions{})
		return err
	}
	lease := func(name string) error {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-node-lease"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40)}}
		_, err := a.CoordinationV1().Leases("kube-node-lease").Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	token := func(bound *authenticationv1.BoundObjectReference) error {
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: bound}}
		_, err := a.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", req, metav1.CreateOptions{})
		return err
	}
	nodeRestriction := func(node string) error {
		_, err := nodes.Patch(ctx, node, types.MergePatchType, mergePatch(`{"metadata":{"labels":{"node-restriction.kubernetes.io/pool":"trusted"}}}`), metav1.PatchOptions{})
		return err
	}
	// An admin-set restricted label on a's Node, which a must not remove.
	if _, err := admin.CoreV1().Nodes().Patch(ctx, "a", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"x.node-restriction.kubernetes.io/tier":"gold"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		do      func() error
		refused bool
	}{
		// Nodes.
		{"patch another node's labels", func() error {
			_, err := nodes.Patch(ctx, "b", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"type":"edge"}}}`), metav1.PatchOptions{})
			return err
		}, true},
		{"patch own labels", func() error {
			_, err := nodes.Patch(ctx, "a", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"team":"x"}}}`), metav1.PatchOptions{})
			return err
		}, false},
		{"claim another node's address in its status", func() error {
			_, err := nodes.Patch(ctx, "b", types.MergePatchType, mergePatch(`{"status":{"addresses":[{"type":"InternalIP","address":"198.18.0.9"}]}}`), metav1.PatchOptions{}, "status")
			return err
		}, true},
		{"write own status", func() error {
			_, err := nodes.Patch(ctx, "a", types.MergePatchType, mergePatch(`{"status":{"addresses":[{"type":"InternalIP","address":"198.18.0.8"}]}}`), metav1.PatchOptions{}, "status")
			return err
		}, false},
		{"register another node", func() error {
			_, err := nodes.Create(ctx, virtualNode("c"), metav1.CreateOptions{})
			return err
		}, true},
		{"set a node-restriction.kubernetes.io label on itself", func() error { return nodeRestriction("a") }, true},
		{"remove an admin's node-restriction label", func() error {
			_, err := nodes.Patch(ctx, "a", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"x.node-restriction.kubernetes.io/tier":null}}}`), metav1.PatchOptions{})
			return err
		}, true},
		{"drop its own virtual-node label", func() error {
			_, err := nodes.Patch(ctx, "a", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"type":null}}}`), metav1.PatchOptions{})
			return err
		}, true},
		{"write a real kubelet's Node under its name", func() error {
			_, err := vnodeClient(t, cp, "real").CoreV1().Nodes().Patch(ctx, "real", types.MergePatchType, mergePatch(`{"metadata":{"labels":{"team":"x"}}}`), metav1.PatchOptions{})
			return err
		}, true},
		{"write as a look-alike identity", func() error {
			return statusOf(clientAs(t, cp, "system:vnodefoo", identity.VNodesGroup))("pa", annotate("x", "y"))
		}, true},
		// Pods.
		{"annotate another node's pod", func() error {
			return podStatus("pb", annotate("k8s.aliyun.com/eci-instance-id", "eci-evil"))
		}, true},
		{"annotate an unbound pod", func() error { return podStatus("unbound", annotate("x", "y")) }, true},
		{"annotate own pod", func() error { return podStatus("pa", annotate("k8s.aliyun.com/eci-instance-id", "eci-a")) }, false},
		{"write another node's pod status", func() error { return podStatus("pb", message("hijacked")) }, true},
		{"write own pod status", func() error { return podStatus("pa", message("mine")) }, false},
		{"delete another node's pod", func() error {
			return a.CoreV1().Pods(ns).Delete(ctx, "pb", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}, true},
		// PVCs.
		{"mark a claim used by its instance", func() error {
			return claimPatch(`{"metadata":{"annotations":{"vnode.io/used-by.eci-a":"default/pa"}}}`)
		}, false},
		{"unmark it", func() error { return claimPatch(`{"metadata":{"annotations":{"vnode.io/used-by.eci-a":null}}}`) }, false},
		{"mark a claim used by a pod of another namespace", func() error {
			return claimPatch(`{"metadata":{"annotations":{"vnode.io/used-by.eci-a":"kube-system/x"}}}`)
		}, true},
		{"change another annotation of a claim", func() error { return claimPatch(`{"metadata":{"annotations":{"owner":"evil"}}}`) }, true},
		{"label a claim", func() error { return claimPatch(`{"metadata":{"labels":{"x":"y"}}}`) }, true},
		{"add a finalizer to a claim", func() error { return claimPatch(`{"metadata":{"finalizers":["evil.example.com/hold"]}}`) }, true},
		// Leases.
		{"renew another node's lease", func() error { return lease("b") }, true},
		{"renew own lease", func() error { return lease("a") }, false},
		// Service-account tokens.
		{"mint an unbound service-account token", func() error { return token(nil) }, true},
		{"mint a token bound to own pod", func() error {
			return token(&authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "pa", UID: pods["pa"].UID})
		}, false},
		// Last, as it removes the pod.
		{"delete own pod", func() error {
			return a.CoreV1().Pods(ns).Delete(ctx, "pa", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}, false},
	} {
		err := c.do()
		switch {
		case c.refused && err == nil:
			t.Errorf("%s: allowed; want refused by vnode-restriction", c.name)
		case c.refused && !(apierrors.IsForbidden(err) && strings.Contains(err.Error(), policyDenied)) || strings.Contains(errString(err), "resulted in error"):
			// An expression that errs refuses too (failurePolicy: Fail),
			// but by accident, not by its rule.
			t.Errorf("%s: %v; want refused by vnode-restriction", c.name, err)
		case !c.refused && err != nil:
			t.Errorf("%s: %v; want allowed", c.name, err)
		default:
			t.Logf("%s: %v", c.name, errString(err))
		}
	}

	// Writing a pod itself (not its status) is not even in the node's role:
	// RBAC refuses it before any policy runs.
	_, err := a.CoreV1().Pods(ns).Patch(ctx, "pa", types.MergePatchType, mergePatch(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{})
	if !apierrors.IsForbidden(err) || strings.Contains(err.Error(), policyDenied) {
		t.Errorf("PATCH of its own pod: %v; want refused by RBAC", err)
	}

	// Nothing refused reached storage.
	if n, err := admin.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{}); err != nil || n.Labels[identity.NodeTypeLabel] != identity.NodeTypeVirtual || len(n.Status.Addresses) != 0 {
		t.Errorf("Node b changed: %v %v %v", err, n.Labels, n.Status.Addresses)
	}
	if p, err := admin.CoreV1().Pods(ns).Get(ctx, "pb", metav1.GetOptions{}); err != nil || p.Annotations["k8s.aliyun.com/eci-instance-id"] != "" {
		t.Errorf("pod pb changed or gone: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "allowed"
	}
	return err.Error()
}

// checkTypes waits until the API server has type-checked every vnode policy
// and fails on any warning: a misspelt field would make a rule a no-op or an
// error at request time.
func checkTypes(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=vnode"})
		if err != nil {
			return false, err
		}
		if len(l.Items) == 0 {
			return false, fmt.Errorf("manifests/vnode holds no ValidatingAdmissionPolicy")
		}
		for _, p := range l.Items {
			if p.Status.ObservedGeneration != p.Generation || p.Status.TypeChecking == nil {
				return false, nil
			}
		}
		for _, p := range l.Items {
			for _, w := range p.Status.TypeChecking.ExpressionWarnings {
				t.Errorf("policy %s: %s: %s", p.Name, w.FieldRef, w.Warning)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for the policies to be type-checked: %v", err)
	}
}

// waitEnforced waits until every policy refuses a dry-run attack: the API
// server loads policies and bindings through an informer, a moment after
// they are created.
func waitEnforced(ctx context.Context, t *testing.T, a kubernetes.Interface) {
	t.Helper()
	dry := []string{metav1.DryRunAll}
	probes := map[string]func() error{
		"nodes": func() error {
			_, err := a.CoreV1().Nodes().Create(ctx, virtualNode("probe"), metav1.CreateOptions{DryRun: dry})
			return err
		},
		"pods": func() error {
			p, err := a.CoreV1().Pods(ns).Get(ctx, "pb", metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Status.Message = "probe"
			_, err = a.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{DryRun: dry})
			return err
		},
		"claims": func() error {
			_, err := a.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "claim", types.MergePatchType, []byte(`{"metadata":{"labels":{"probe":"x"}}}`), metav1.PatchOptions{DryRun: dry})
			return err
		},
		"leases": func() error {
			l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "kube-node-lease"}}
			_, err := a.CoordinationV1().Leases("kube-node-lease").Create(ctx, l, metav1.CreateOptions{DryRun: dry})
			return err
		},
		"tokens": func() error {
			// Not dry-run (TokenRequest may not support it): while the policy
			// is not enforced yet, this mints a token nobody keeps.
			_, err := a.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		},
	}
	for name, probe := range probes {
		var last error
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			last = probe()
			return last != nil && strings.Contains(last.Error(), policyDenied+name), nil
		})
		if err != nil {
			t.Fatalf("vnode-restriction-%s is not enforced (is ValidatingAdmissionPolicy enabled?): last answer %v", name, last)
		}
	}
}
