package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/emulator/vnodehost"
)

const akSecret = "TOPSECRETKEY0123"

// writeContext writes ~/.vnode/config with one context on endpoint.
func (e *env) writeContext(t *testing.T, endpoint string) {
	t.Helper()
	cfg := fmt.Sprintf(`kind: vnode
contexts:
  - name: emulator
    region-id: cn-hangzhou
    access-key-id: AKID
    access-key-secret: %s
    vswitch-id: vsw-1
    security-group-id: sg-1
    kubeconfig: %s
    endpoint: %s
current-context: emulator
`, akSecret, e.deployKubeconfig(), endpoint)
	if err := os.MkdirAll(filepath.Join(e.home, ".vnode"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.home, ".vnode", "config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// `create --in-cluster --dry` prints manifests the real API server accepts
// (server-side dry run), with no secret in them, and changes nothing; the
// real create applies them, a re-run changes nothing, `delete --in-cluster`
// (refused while a pod is bound to the node) and `cluster clean` remove them.
func TestCreateInCluster(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.mustVnode(t, e.setupArgs(bootstrapFlags()...)...)
	// The node is not created through ECI: no emulator is needed.
	e.writeContext(t, "http://127.0.0.1:1")
	create := []string{"create", "--in-cluster", "--name", "edge.1", "--zone-id", "cn-hangzhou-b", "--cluster-dns", "10.96.0.10",
		"--cluster-domain", "cluster.local", "--taint", "dedicated=ml:NoSchedule", "--custom-resources", "nvidia.com/gpu=2",
		"--image", "registry.example/vnode:v1"}
	const object = "vnode-edge-1"

	out := e.mustVnode(t, append(create, "--dry")...)
	for _, secret := range []string{akSecret, tokenSecret, "PRIVATE KEY"} {
		if strings.Contains(out, secret) {
			t.Errorf("--dry printed a secret (%q)", secret)
		}
	}
	e.inClusterGone(t, ctx, object, "after --dry")
	// What --dry printed, server-side dry run on the real API server; its
	// namespace must exist for that (a dry run creates nothing).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "vnode-system"}}
	if _, err := e.cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kinds := e.serverDryRun(t, ctx, out)
	for _, k := range []string{"Namespace", "Secret", "Deployment", "ClusterRole", "ValidatingAdmissionPolicy"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("--dry printed no %s (printed %v)", k, kinds)
		}
	}
	e.inClusterGone(t, ctx, object, "after a server-side dry run")

	e.mustVnode(t, create...)
	d, err := e.cp.Client.AppsV1().Deployments("vnode-system").Get(ctx, object, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--nodename=edge.1", "--cluster-dns=10.96.0.10", "--cluster-domain=cluster.local", "--bootstrap-kubeconfig=/etc/vnode/bootstrap-kubeconfig",
		"--rotate-server-certificates"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	// A bootstrapped node's serving certificate comes by CSR, not from
	// the Secret.
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--tls-cert-file") || strings.HasPrefix(arg, "--tls-private-key-file") {
			t.Errorf("args %v name a static serving pair", c.Args)
		}
	}
	if c.Image != "registry.example/vnode:v1" || d.Spec.Template.Spec.Volumes[0].Secret.SecretName != object {
		t.Errorf("image %s, volumes %+v", c.Image, d.Spec.Template.Spec.Volumes)
	}
	s, err := e.cp.Client.CoreV1().Secrets("vnode-system").Get(ctx, object, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(s.Data["config"])
	for _, want := range []string{"access-key-secret: " + akSecret, "vnode-name: edge.1", "nvidia.com/gpu: \"2\"", "dedicated", "cn-hangzhou-b", "kubeconfig: /var/lib/vnode/kubeconfig"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("the node's config lacks %q:\n%s", want, cfg)
		}
	}
	if !strings.Contains(string(s.Data["bootstrap-kubeconfig"]), tokenID+"."+tokenSecret) || len(s.Data["tls.key"]) != 0 || len(s.Data["ca.crt"]) == 0 {
		t.Errorf("the Secret's keys: %v", keys(s.Data))
	}

	// A re-run changes nothing: no rollout.
	e.mustVnode(t, create...)
	s2, err := e.cp.Client.CoreV1().Secrets("vnode-system").Get(ctx, object, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d2, err := e.cp.Client.AppsV1().Deployments("vnode-system").Get(ctx, object, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Data["tls.crt"], s2.Data["tls.crt"]) || s.ResourceVersion != s2.ResourceVersion || d.Generation != d2.Generation {
		t.Errorf("a re-run changed the node: Secret %s -> %s, Deployment generation %d -> %d", s.ResourceVersion, s2.ResourceVersion, d.Generation, d2.Generation)
	}

	// delete is refused while a pod is bound to the node.
	if err := e.cp.CreateNamespace(ctx, "work"); err != nil { // waits for its default ServiceAccount
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound", Namespace: "work"},
		Spec: corev1.PodSpec{NodeName: "edge.1", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := e.cp.Client.CoreV1().Pods("work").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vnode(t, "delete", "--in-cluster", "edge.1"); err == nil || !strings.Contains(err.Error(), "kubectl drain edge.1") {
		t.Fatalf("delete with a bound pod: %v", err)
	}
	zero := int64(0)
	if err := e.cp.Client.CoreV1().Pods("work").Delete(ctx, "bound", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the bound pod to go", func() bool {
		_, err := e.cp.Client.CoreV1().Pods("work").Get(ctx, "bound", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	e.mustVnode(t, "delete", "--in-cluster", "edge.1")
	e.inClusterGone(t, ctx, object, "after delete --in-cluster")

	e.mustVnode(t, create...)
	e.mustVnode(t, "cluster", "clean")
	e.inClusterGone(t, ctx, object, "after cluster clean")
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// inClusterGone fails when the node's Deployment or Secret exists.
func (e *env) inClusterGone(t *testing.T, ctx context.Context, object, after string) {
	t.Helper()
	if _, err := e.cp.Client.AppsV1().Deployments("vnode-system").Get(ctx, object, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s: Deployment %s exists (err %v)", after, object, err)
	}
	if _, err := e.cp.Client.CoreV1().Secrets("vnode-system").Get(ctx, object, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s: Secret %s exists (err %v)", after, object, err)
	}
}

// serverDryRun applies each object of a --dry output with a server-side
// dry run, as `kubectl apply --server-side --dry-run=server` would, and
// returns their kinds.
func (e *env) serverDryRun(t *testing.T, ctx context.Context, printed string) []string {
	t.Helper()
	dyn, err := dynamic.NewForConfig(e.cp.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(e.cp.Client.Discovery()))
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(printed), 4096)
	var kinds []string
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return kinds
			}
			t.Fatalf("--dry printed what does not parse: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
		}
		data, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		force := true
		if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "test", Force: &force, DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("server-side dry run of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		kinds = append(kinds, u.GetKind())
	}
}

// A hosted node that cannot join is Failed, and `create --wait` stops with
// the reason instead of waiting out its timeout: here a bootstrap token
// whose node's certificate nobody approves (no vnode-approver).
func TestCreateWaitStopsWithTheReasonANodeFailed(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kubelet := buildBinary(t, "vnode-kubelet")
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": akSecret}, Runtime: "sim",
		Delays: emulator.Delays{VirtualNode: time.Hour}})
	host, err := vnodehost.New(vnodehost.Config{Emulator: em, Endpoint: "http://" + ep, Binary: kubelet, Dir: t.TempDir(), Log: logrus.New(),
		JoinTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hostDone := make(chan struct{})
	go func() { _ = host.Run(ctx); close(hostDone) }()
	t.Cleanup(func() { cancel(); <-hostDone })

	e.mustVnode(t, e.setupArgs(bootstrapFlags()...)...)
	e.writeContext(t, "http://"+ep)
	out, err := e.vnode(t, "create", "--wait", "--wait-timeout", "2m")
	if err == nil || !strings.Contains(err.Error(), vnodehost.ReasonCertNotApproved) || !strings.Contains(err.Error(), "vnode-approver") {
		t.Fatalf("create --wait: %v\n%s\nwant the reason %s", err, out, vnodehost.ReasonCertNotApproved)
	}
}
