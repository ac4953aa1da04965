package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/integration/controlplane"
)

const (
	tokenID     = "eci123"
	tokenSecret = "eci1233333333333"
)

func (e *env) setupArgs(extra ...string) []string {
	return append([]string{"cluster", "setup", "--apiserver-address", e.cp.APIServerURL, "--cluster-ca-path", e.cp.PKI.CACertPath}, extra...)
}

func bootstrapFlags() []string {
	return []string{"--bootstrap", "--bootstrap-token-id", tokenID, "--bootstrap-token-secret", tokenSecret}
}

// nothingCreated fails when setup left anything in the cluster or HOME.
func (e *env) nothingCreated(t *testing.T, ctx context.Context, after string) {
	t.Helper()
	if _, err := e.cp.Client.RbacV1().ClusterRoles().Get(ctx, "system:vnode", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s: ClusterRole system:vnode exists (err %v)", after, err)
	}
	if _, err := e.cp.Client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+tokenID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s: the bootstrap token Secret exists (err %v)", after, err)
	}
	if _, err := os.Stat(e.deployKubeconfig()); !os.IsNotExist(err) {
		t.Errorf("%s: %s was written", after, e.deployKubeconfig())
	}
}

// The seed's TLS bootstrap procedure up to validate, with the bad input
// it must refuse unchanged, re-runs, DaemonSet exclusion and clean.
func TestClusterSetupValidateCleanBootstrap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	if _, err := e.vnode(t, "cluster", "validate"); err == nil || err.Error() != "kubeconfig can't be empty" {
		t.Fatalf("validate before setup: %v, want exactly \"kubeconfig can't be empty\"", err)
	}

	// Bad input: each a clear message, nothing created.
	otherCA, err := controlplane.NewCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{e.setupArgs("--bootstrap", "--bootstrap-token-id", "eci12", "--bootstrap-token-secret", tokenSecret), "[a-z0-9]{6}"},
		{e.setupArgs("--bootstrap", "--bootstrap-token-id", "ECI123", "--bootstrap-token-secret", tokenSecret), "[a-z0-9]{6}"},
		{e.setupArgs("--bootstrap", "--bootstrap-token-id", tokenID, "--bootstrap-token-secret", "eci123333333333"), "[a-z0-9]{16}"},
		{e.setupArgs("--bootstrap", "--bootstrap-token-id", tokenID, "--bootstrap-token-secret", "ECI1233333333333"), "[a-z0-9]{16}"},
		{append([]string{"cluster", "setup", "--apiserver-address", e.cp.APIServerURL, "--cluster-ca-path", otherCA.CACertPath}, bootstrapFlags()...), "did not sign"},
		{append([]string{"cluster", "setup", "--apiserver-address", "https://127.0.0.1:1", "--cluster-ca-path", e.cp.PKI.CACertPath}, bootstrapFlags()...), "cannot reach the API server at https://127.0.0.1:1"},
		{append(e.setupArgs(bootstrapFlags()...), "--kubernetes-version", "1.20"), "vnode supports Kubernetes 1.28 to 1.35"},
		{append(e.setupArgs(bootstrapFlags()...), "--kubeconfig", filepath.Join(t.TempDir(), "missing")), "admin kubeconfig"},
	} {
		out, err := e.vnode(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("vnode %s: %v\n%s\nwant an error with %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
	e.nothingCreated(t, ctx, "after refused setups")

	out := e.mustVnode(t, append(e.setupArgs(bootstrapFlags()...), "--dry")...)
	if !strings.Contains(out, "would apply ClusterRole system:vnode") || !strings.Contains(out, "would apply Secret kube-system/bootstrap-token-"+tokenID) || strings.Contains(out, tokenSecret) {
		t.Fatalf("--dry printed:\n%s", out)
	}
	e.nothingCreated(t, ctx, "after --dry")

	out = e.mustVnode(t, e.setupArgs(append(bootstrapFlags(), "--bootstrap-token-ttl", "2h")...)...)
	if !strings.Contains(out, "Secret kube-system/bootstrap-token-"+tokenID+" created") {
		t.Fatalf("setup printed:\n%s", out)
	}
	st, err := os.Stat(e.deployKubeconfig())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the node's kubeconfig: %v, mode %v; want 0600", err, st)
	}
	s, err := e.cp.Client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+tokenID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
	if err != nil || time.Until(exp) > 2*time.Hour || time.Until(exp) < time.Hour {
		t.Fatalf("expiration %q, want about 2h from now", s.Data["expiration"])
	}
	if string(s.Data["auth-extra-groups"]) != "system:bootstrappers:vnode" || s.Type != "bootstrap.kubernetes.io/token" {
		t.Fatalf("the token Secret: type %s, groups %q", s.Type, s.Data["auth-extra-groups"])
	}

	// Re-running updates, never duplicates.
	out = e.mustVnode(t, e.setupArgs(bootstrapFlags()...)...)
	if !strings.Contains(out, "Secret kube-system/bootstrap-token-"+tokenID+" configured") || strings.Contains(out, " created") {
		t.Fatalf("a re-run printed:\n%s", out)
	}
	secrets, _ := e.cp.Client.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "type=bootstrap.kubernetes.io/token"})
	if len(secrets.Items) != 1 {
		t.Fatalf("%d bootstrap token Secrets after two setups, want 1", len(secrets.Items))
	}

	// A DaemonSet that tolerates everything, as kube-proxy does.
	e.kubeProxy(t, ctx)

	// Without vnode-approver, and with kube-proxy landing on virtual nodes:
	// validate fails, naming both with their fixes.
	out, err = e.vnode(t, "cluster", "validate")
	if err == nil {
		t.Fatalf("validate passed without vnode-approver:\n%s", out)
	}
	for _, want := range []string{
		"[PASS] kubeconfig " + e.deployKubeconfig(),
		"[PASS] the API server " + e.cp.APIServerURL + " answers with the kubeconfig's CA",
		"[PASS] the kubeconfig authenticates as system:bootstrap:" + tokenID,
		"[PASS] bootstrap token " + tokenID + " is valid",
		"has all", "[FAIL] vnode-approver is running",
		"[FAIL] no DaemonSet would land on a virtual node: kube-system/kube-proxy would",
		"vnode daemonsets exclude kube-system/kube-proxy",
		"[FAIL] system:bootstrap:" + tokenID + " may create certificatesigningrequests.certificates.k8s.io/vnodeclient",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("validate's output lacks %q", want)
		}
	}

	// The add-on, run outside the cluster as `make run` does.
	if _, err := e.vnode(t, "addon", "enable", "nope"); err == nil || !strings.Contains(err.Error(), `unknown add-on "nope"`) {
		t.Fatalf("an unknown add-on: %v", err)
	}
	out = e.mustVnode(t, "addon", "enable", "vnode-approver", "--image", "example.com/vnode:test")
	d, err := e.cp.Client.AppsV1().Deployments("vnode-system").Get(ctx, "vnode-approver", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Spec.Containers[0].Image != "example.com/vnode:test" {
		t.Fatalf("the approver's Deployment: %v", err)
	}
	out = e.mustVnode(t, "addon", "list")
	if !strings.Contains(out, "ADDON NAME") || !strings.Contains(out, "vnode-approver   Unavailable (0/2 ready)") {
		t.Fatalf("addon list before the approver runs:\n%s", out)
	}
	e.runApprover(t)
	waitFor(t, ctx, "addon list to show vnode-approver running", func() bool {
		out, _ := e.vnode(t, "addon", "list")
		return strings.Contains(out, "vnode-approver   Running (Lease held by")
	})

	// daemonsets exclude: --dry shows the patch and changes nothing.
	out = e.mustVnode(t, "daemonsets", "exclude", "kube-proxy", "--dry")
	if !strings.Contains(out, `"operator":"NotIn"`) || !strings.Contains(out, `"virtual-kubelet"`) {
		t.Fatalf("--dry printed:\n%s", out)
	}
	if ds, _ := e.cp.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); ds.Spec.Template.Spec.Affinity != nil {
		t.Fatal("--dry patched the DaemonSet")
	}
	e.mustVnode(t, "daemonsets", "exclude", "kube-proxy")
	if out := e.mustVnode(t, "daemonsets", "exclude", "--all"); strings.Contains(out, "now excludes") {
		t.Fatalf("a second exclude changed something:\n%s", out)
	}
	if out := e.mustVnode(t, "daemonsets", "exclude", "kube-proxy"); !strings.Contains(out, "already excludes") {
		t.Fatalf("exclude is not idempotent:\n%s", out)
	}
	ds, _ := e.cp.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	terms := ds.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 || terms[0].MatchExpressions[0].Key != "type" {
		t.Fatalf("kube-proxy's node affinity: %+v", terms)
	}

	out = e.mustVnode(t, "cluster", "validate")
	if strings.Contains(out, "[FAIL]") || !strings.Contains(out, "the cluster is ready for virtual nodes") {
		t.Fatalf("validate after the fixes:\n%s", out)
	}

	// clean removes what setup and the add-on made.
	e.mustVnode(t, "cluster", "clean")
	e.nothingCreated(t, ctx, "after clean")
	for _, check := range []func() error{
		func() error {
			_, err := e.cp.Client.AppsV1().Deployments("vnode-system").Get(ctx, "vnode-approver", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := e.cp.Client.RbacV1().ClusterRoleBindings().Get(ctx, "vnode:approver", metav1.GetOptions{})
			return err
		},
	} {
		waitFor(t, ctx, "the approver's objects to go", func() bool { return apierrors.IsNotFound(check()) })
	}
}

// The ServiceAccount mode: a long-lived token bound to the same role. The
// add-on comes first here, in the seed's own order.
func TestClusterSetupServiceAccountMode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.mustVnode(t, "addon", "enable", "vnode-approver")
	out := e.mustVnode(t, e.setupArgs()...)
	if !strings.Contains(out, "NOT rotated") {
		t.Fatalf("setup does not say the token is not rotated:\n%s", out)
	}
	e.mustVnode(t, e.setupArgs()...)
	sas, _ := e.cp.Client.CoreV1().Secrets("vnode-system").List(ctx, metav1.ListOptions{})
	n := 0
	for _, s := range sas.Items {
		if s.Type == corev1.SecretTypeServiceAccountToken {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d token Secrets after two setups, want 1", n)
	}
	out = e.mustVnode(t, "cluster", "validate")
	for _, want := range []string{"authenticates as system:serviceaccount:vnode-system:vnode", "has all", "the cluster is ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate lacks %q", want)
		}
	}

	// A kubeconfig whose CA did not sign the API server's certificate.
	good, err := os.ReadFile(e.deployKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := controlplane.NewCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.Load(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range kc.Clusters {
		c.CertificateAuthorityData = otherCA.CAPEM()
	}
	if err := clientcmd.WriteToFile(*kc, e.deployKubeconfig()); err != nil {
		t.Fatal(err)
	}
	out, err = e.vnode(t, "cluster", "validate")
	if err == nil || !strings.Contains(out, "[FAIL] the API server "+e.cp.APIServerURL+" answers with the kubeconfig's CA") || !strings.Contains(out, "--cluster-ca-path") {
		t.Fatalf("validate with a CA that does not match: %v\n%s", err, out)
	}
	if err := os.WriteFile(e.deployKubeconfig(), good, 0o600); err != nil {
		t.Fatal(err)
	}

	e.mustVnode(t, "cluster", "clean")
	e.nothingCreated(t, ctx, "after clean")
	waitFor(t, ctx, "the vnode-system namespace to go", func() bool {
		_, err := e.cp.Client.CoreV1().Namespaces().Get(ctx, "vnode-system", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := e.cp.Client.RbacV1().ClusterRoleBindings().Get(ctx, "vnode:approver", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the approver's binding survived clean: %v", err)
	}
}

func (e *env) kubeProxy(t *testing.T, ctx context.Context) {
	t.Helper()
	labels := map[string]string{"k8s-app": "kube-proxy"}
	_, err := e.cp.Client.AppsV1().DaemonSets("kube-system").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers:  []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.35.4"}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
