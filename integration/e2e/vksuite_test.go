package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	vke2e "github.com/virtual-kubelet/virtual-kubelet/test/e2e"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/provider/vnode"
)

const (
	// vkSuiteNode is the virtual node the suite drives; the suite also
	// expects the pod running it to carry this name.
	vkSuiteNode = "vkubelet-vnode-0"
	vkSuiteNS   = "vk-suite"
	// vkSuiteHost is the (kubelet-less) node the vnode pod runs on.
	vkSuiteHost = "vk-suite-host"
)

// virtual-kubelet's own importable end-to-end suite runs against the real
// control plane and a virtual node backed by the ECI emulator. Every one of
// its tests must run: ShouldSkipTest skips nothing.
func TestVirtualKubeletSuite(t *testing.T) {
	e := newEnv(t, "process")
	host := netns.New(t, 45)
	// The suite's stats and metrics tests reach the kubelet API through
	// pods/proxy, which forwards no caller identity: the node must admit
	// anonymous callers (still authorised by SubjectAccessReview, see
	// grantAnonymousStats), as a kubelet with --anonymous-auth does.
	e.startNodeWith(t, vkSuiteNode, host, func(o *vnode.Options) { o.AnonymousAuth = true })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := e.cp.CreateNamespace(ctx, vkSuiteNS); err != nil {
		t.Fatal(err)
	}

	var ran []string
	ts := vke2e.NewEndToEndTestSuite(vke2e.EndToEndTestSuiteConfig{
		Kubeconfig: e.cp.KubeconfigPath,
		Namespace:  vkSuiteNS,
		NodeName:   vkSuiteNode,
		// Pods here run within seconds; a failure should not take the
		// suite's default two minutes per wait.
		WatchTimeout: time.Minute,
		Setup: func() error {
			if err := grantAnonymousStats(ctx, e.cp.Client, vkSuiteNode); err != nil {
				return err
			}
			return runVnodePod(ctx, e.cp.Client, host)
		},
		ShouldSkipTest: func(name string) bool {
			ran = append(ran, name)
			return false
		},
	})
	ts.Run(t)
	// suite.Run finds tests by reflection: an empty run would pass silently.
	if len(ran) < 9 {
		t.Errorf("the suite ran %d tests (%v), want all 9", len(ran), ran)
	}
}

// runVnodePod records the pod a real deployment runs vnode in: named like
// its node, in the suite's namespace, with host networking on the machine
// that runs vnode, so its IP is where the kubelet API listens (the test
// host's address, port 10250). No kubelet runs on that machine here (vnode
// runs in this process), so the test posts, as the admin, the Node and the
// pod status that machine's kubelet would; the API server's pods/proxy
// then goes to the real kubelet API of the virtual node.
func runVnodePod(ctx context.Context, c kubernetes.Interface, host *netns.Host) error {
	ip := host.IP.String()
	hostNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: vkSuiteHost},
		// Nothing else may land on a machine without a kubelet.
		Spec: corev1.NodeSpec{Unschedulable: true}}
	if _, err := c.CoreV1().Nodes().Create(ctx, hostNode, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the host node %s: %w", vkSuiteHost, err)
	}
	// The node lifecycle controller taints a new node at once: read it
	// again on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.CoreV1().Nodes().Get(ctx, vkSuiteHost, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		_, err = c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting the host node's address: %w", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: vkSuiteNode, Namespace: vkSuiteNS},
		Spec: corev1.PodSpec{
			NodeName:    vkSuiteHost,
			HostNetwork: true,
			// The host has no kubelet to keep its node Ready: tolerate
			// the taints the node lifecycle controller puts on it, so
			// the pod is not evicted mid-suite.
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "vnode", Image: "vnode-kubelet",
				Args:  []string{"--nodename", vkSuiteNode},
				Ports: []corev1.ContainerPort{{Name: "kubelet", ContainerPort: 10250, HostPort: 10250}}}},
		},
	}
	p, err := c.CoreV1().Pods(vkSuiteNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the vnode pod: %w", err)
	}
	now := metav1.Now()
	p.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    ip,
		HostIPs:   []corev1.HostIP{{IP: ip}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "vnode", Image: "vnode-kubelet", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	if _, err := c.CoreV1().Pods(vkSuiteNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("posting the vnode pod's status: %w", err)
	}
	return nil
}

// grantAnonymousStats lets system:anonymous read node's stats and resource
// metrics, and nothing else: what an admin grants so that the pods/proxy
// route the suite uses gets through the kubelet API's authorisation.
func grantAnonymousStats(ctx context.Context, c kubernetes.Interface, node string) error {
	name := "vk-suite-anonymous-stats"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/stats", "nodes/metrics"},
			ResourceNames: []string{node}, Verbs: []string{"get"}}}}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating cluster role %s: %w", name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:anonymous"}}}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding cluster role %s to system:anonymous: %w", name, err)
	}
	return nil
}
