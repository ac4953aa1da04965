package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/provider/nodeobject"
)

// list's SCHEDULABLE and ZONES come from the cluster's Node
// <region>.<vnd-id>: Ready and not cordoned, and its zone labels.
func TestListReadsSchedulableFromTheClustersNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim",
		Delays: emulator.Delays{VirtualNode: time.Millisecond}})
	e.mustVnode(t, e.setupArgs()...)
	cfg := fmt.Sprintf(`kind: vnode
contexts:
  - name: emulator
    region-id: cn-hangzhou
    access-key-id: AKID
    access-key-secret: SECRET
    vswitch-id: vsw-1
    security-group-id: sg-1
    kubeconfig: %s
    endpoint: http://%s
current-context: emulator
`, e.deployKubeconfig(), ep)
	if err := os.WriteFile(filepath.Join(e.home, ".vnode", "config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := e.mustVnode(t, "create", "--client-token", "once")
	id := regexp.MustCompile(`"VirtualNodeId":"(vnd-[a-z0-9]+)"`).FindStringSubmatch(out)[1]
	row := func() string {
		out := e.mustVnode(t, "list")
		return strings.Split(strings.TrimSpace(out), "\n")[1]
	}
	if r := row(); !regexp.MustCompile(`\s+false\s+-$`).MatchString(r) {
		t.Fatalf("no Node yet: %q, want SCHEDULABLE false", r)
	}

	// The Node as vnode-kubelet registers it, Ready.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cn-hangzhou." + id}}
	nodeobject.Apply(node, nodeobject.Config{Name: node.Name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, VirtualNodeID: id, InternalIP: "127.0.0.1"})
	created, err := e.cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	markReady(ctx, t, e, created.Name)
	if r := row(); !regexp.MustCompile(id + `\s+.*\s+Ready\s+true\s+cn-hangzhou-a$`).MatchString(r) {
		t.Fatalf("a Ready Node: %q, want Ready true cn-hangzhou-a", r)
	}
	// Cordon with a patch: the node lifecycle controller writes the new
	// Node too (taints), and an update of this copy could conflict.
	cordon := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := e.cp.Client.CoreV1().Nodes().Patch(ctx, created.Name, types.MergePatchType, cordon, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := row(); !regexp.MustCompile(`\s+false\s+cn-hangzhou-a$`).MatchString(r) {
		t.Fatalf("a cordoned Node: %q, want SCHEDULABLE false", r)
	}

	// create --wait shows progress until the new VNode's Node is Ready
	// (registered here as vnode-kubelet would; the emulator does not run one).
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := e.vnode(t, "create", "--client-token", "waited", "--wait", "--wait-timeout", "2m")
		done <- result{out, err}
	}()
	var second string
	waitFor(t, ctx, "the second VNode", func() bool {
		out := e.mustVnode(t, "list", "-o", "yaml")
		for _, m := range regexp.MustCompile(`VirtualNodeId: (vnd-[a-z0-9]+)`).FindAllStringSubmatch(out, -1) {
			if m[1] != id {
				second = m[1]
			}
		}
		return second != ""
	})
	n2 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cn-hangzhou." + second}}
	nodeobject.Apply(n2, nodeobject.Config{Name: n2.Name, Region: "cn-hangzhou", Zones: []string{"cn-hangzhou-a"}, VirtualNodeID: second, InternalIP: "127.0.0.1"})
	if n2, err = e.cp.Client.CoreV1().Nodes().Create(ctx, n2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	markReady(ctx, t, e, n2.Name)
	r := <-done
	if r.err != nil || !strings.Contains(r.out, "VNode "+second+": Ready; Node cn-hangzhou."+second+": Ready") || !strings.Contains(r.out, "Normal NodeReady") {
		t.Fatalf("create --wait: %v\n%s", r.err, r.out)
	}
}

// markReady reports the Node Ready with a status patch: the node lifecycle
// controller writes a new Node too (taints), so an update of a copy read
// before it could conflict.
func markReady(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cp.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}
