package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/translate"
	"github.com/vnode-project/vnode/provider/vnode"
)

const (
	akID     = "e2e-id"
	akSecret = "e2e-secret"
)

// env is one control plane, one emulator and the virtual nodes under test.
type env struct {
	cp  *controlplane.ControlPlane
	emu *emulator.Emulator
	ep  string
}

func newEnv(t testing.TB, runtime string) *env {
	t.Helper()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := cp.Kubectl(ctx, "apply", "-k", manifests("vnode")).CombinedOutput(); err != nil {
		t.Fatalf("applying the vnode RBAC: %v\n%s", err, out)
	}
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{akID: akSecret}, Runtime: runtime,
		Delays: emulator.Delays{Scheduling: 50 * time.Millisecond, Pending: 50 * time.Millisecond}})
	return &env{cp: cp, emu: emu, ep: ep}
}

func manifests(dir string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "manifests", dir)
}

// node is a running virtual node.
type node struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	client *eci.Client
}

// startNode runs a virtual node in-process as system:vnode:<name>, its
// kubelet API on loopback.
func (e *env) startNode(t testing.TB, name string) *node { return e.startNodeAt(t, name, nil) }

// startNodeAt is startNode with the kubelet API inside a test host's
// network namespace (the API server proxies only to non-loopback nodes).
func (e *env) startNodeAt(t testing.TB, name string, host *netns.Host) *node {
	t.Helper()
	return e.startNodeWith(t, name, host, nil)
}

// startNodeWith is startNodeAt with tweak applied to the node's options.
func (e *env) startNodeWith(t testing.TB, name string, host *netns.Host, tweak func(*vnode.Options)) *node {
	t.Helper()
	cfg, err := e.cp.UserConfig("system:vnode:"+name, "system:vnodes")
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := net.ParseIP("127.0.0.1")
	var l net.Listener
	if host != nil {
		nodeIP = host.IP
		l, err = host.Listen(10250)
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	serving, err := e.cp.PKI.ServingCert("kubelet-"+name, []string{name}, []net.IP{nodeIP})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	client, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + e.ep, AccessKeyID: akID, AccessKeySecret: akSecret, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	n := &node{name: name, cancel: cancel, done: make(chan error, 1), client: client}
	opts := vnode.Options{
		NodeName: name,
		Node: nodeobject.Config{Name: name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, InternalIP: nodeIP.String(),
			KubeletPort: int32(l.Addr().(*net.TCPAddr).Port), KubeletVersion: "v1.35.4-vnode",
			Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000"), corev1.ResourceMemory: resource.MustParse("4Ti"), corev1.ResourcePods: resource.MustParse("1000")}},
		Pods: translate.NodeSettings{ClusterName: "e2e", NodeName: name, VSwitchIDs: []string{"vsw-e2e"}, SecurityGroupID: "sg-e2e",
			ClusterDNS: []string{"10.0.0.10"}, ClusterDomain: "cluster.local"},
		Cloud: client, Checker: client, Kube: cfg, Listener: l,
		ClientCAFile: e.cp.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath,
		Version: "e2e", SyncInterval: 500 * time.Millisecond, GCInterval: 2 * time.Second, LogPollInterval: 200 * time.Millisecond,
		Log: logrus.NewEntry(logger), Ready: ready,
	}
	if tweak != nil {
		tweak(&opts)
	}
	go func() { n.done <- vnode.Run(ctx, opts) }()
	select {
	case <-ready:
	case err := <-n.done:
		t.Fatalf("virtual node %s stopped: %v", name, err)
	case <-time.After(3 * time.Minute):
		// Where it waits is the only clue a log at warning level leaves.
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("virtual node %s not ready in 3 minutes (goroutines above)", name)
	}
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
	}
}

func vkToleration() corev1.Toleration {
	return corev1.Toleration{Key: identity.TaintKey, Operator: corev1.TolerationOpEqual, Value: identity.TaintValue, Effect: corev1.TaintEffectNoSchedule}
}

// waitPods polls until cond holds for the pods matching selector in ns.
func waitPods(ctx context.Context, t *testing.T, c kubernetes.Interface, ns, selector string, timeout time.Duration, cond func([]corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		pods = l.Items
		return cond(pods), nil
	})
	if err != nil {
		var states []string
		for _, p := range pods {
			states = append(states, p.Name+"="+string(p.Status.Phase)+"/"+p.Status.Reason+" on "+p.Spec.NodeName)
		}
		t.Fatalf("pods %q in %s: condition not met in %s: %s", selector, ns, timeout, strings.Join(states, ", "))
	}
	return pods
}

func allRunning(n int) func([]corev1.Pod) bool {
	return func(pods []corev1.Pod) bool {
		running := 0
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running++
			}
		}
		return running == n && len(pods) == n
	}
}

// instancesOf returns the emulator's groups of a node.
func (e *env) instancesOf(node string) []emulator.ContainerGroupSnapshot {
	var out []emulator.ContainerGroupSnapshot
	for _, g := range e.emu.ContainerGroups() {
		if g.Tags[translate.TagNode] == node {
			out = append(out, g)
		}
	}
	return out
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
