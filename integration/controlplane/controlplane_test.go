package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

const (
	vkTaintKey   = "virtual-kubelet.io/provider"
	vkTaintValue = "alibabacloud"
)

// One control plane serves the behavioural tests; each works in its own
// namespace or on its own objects.
func TestControlPlane(t *testing.T) {
	cp := StartForTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("namespace", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cp-test"}}
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating namespace: %v", err)
		}
		got, err := cp.Client.CoreV1().Namespaces().Get(ctx, "cp-test", metav1.GetOptions{})
		if err != nil || got.Status.Phase != corev1.NamespaceActive {
			t.Fatalf("namespace not active: %v %v", got.Status.Phase, err)
		}
	})

	t.Run("scheduler binds only pods that tolerate the virtual node", func(t *testing.T) {
		createReadyVirtualNode(ctx, t, cp.Client, "vnode-sched-test")
		ns := "sched"
		if err := cp.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		tolerating := testPod("tolerating", true)
		intolerant := testPod("intolerant", false)
		for _, p := range []*corev1.Pod{tolerating, intolerant} {
			if _, err := cp.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatalf("creating pod %s: %v", p.Name, err)
			}
		}
		var bound *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := cp.Client.CoreV1().Pods(ns).Get(ctx, "tolerating", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			bound = p
			return p.Spec.NodeName != "", nil
		})
		if err != nil {
			t.Fatalf("tolerating pod never bound (conditions %+v): %v", bound.Status.Conditions, err)
		}
		if bound.Spec.NodeName != "vnode-sched-test" {
			t.Fatalf("tolerating pod bound to %q, want vnode-sched-test", bound.Spec.NodeName)
		}
		// The intolerant pod must be judged unschedulable by the scheduler,
		// not merely not yet looked at.
		var reason string
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := cp.Client.CoreV1().Pods(ns).Get(ctx, "intolerant", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Spec.NodeName != "" {
				t.Fatalf("intolerant pod was bound to %s", p.Spec.NodeName)
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					reason = c.Reason + ": " + c.Message
					return c.Reason == corev1.PodReasonUnschedulable, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("intolerant pod not marked unschedulable: %v", err)
		}
		if !strings.Contains(reason, "untolerated taint") {
			t.Errorf("unschedulable for another reason than the taint: %s", reason)
		}
	})

	t.Run("approved CSR is signed by kube-controller-manager", func(t *testing.T) {
		csrPEM := newCSR(t, "csr-test-user", nil)
		csr := &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{Name: "cp-test-csr"},
			Spec: certificatesv1.CertificateSigningRequestSpec{
				Request:    csrPEM,
				SignerName: certificatesv1.KubeAPIServerClientSignerName,
				Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
			},
		}
		created, err := cp.Client.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating CSR: %v", err)
		}
		created.Status.Conditions = append(created.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApproved", Message: "approved by the test",
		})
		if _, err := cp.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, created.Name, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("approving CSR: %v", err)
		}
		var issued []byte
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := cp.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, created.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			issued = got.Status.Certificate
			return len(issued) > 0, nil
		})
		if err != nil {
			t.Fatalf("certificate never issued: %v", err)
		}
		block, _ := pem.Decode(issued)
		if block == nil {
			t.Fatal("issued certificate is not PEM")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parsing issued certificate: %v", err)
		}
		if cert.Subject.CommonName != "csr-test-user" {
			t.Errorf("issued CN %q", cert.Subject.CommonName)
		}
		if err := cert.CheckSignatureFrom(cp.PKI.CACert); err != nil {
			t.Errorf("issued certificate not signed by the cluster CA: %v", err)
		}
	})

	t.Run("RBAC denies a user without rights", func(t *testing.T) {
		cfg, err := cp.UserConfig("nobody")
		if err != nil {
			t.Fatal(err)
		}
		client := kubernetes.NewForConfigOrDie(cfg)
		_, err = client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("listing pods as nobody: got %v, want Forbidden", err)
		}
		// The same identity is authenticated (not anonymous): the API server
		// names it in the denial.
		if !strings.Contains(err.Error(), `"nobody"`) {
			t.Errorf("denial does not name the user: %v", err)
		}
	})

	t.Run("kubectl uses the admin kubeconfig", func(t *testing.T) {
		out, err := cp.Kubectl(ctx, "get", "ns", "-o", "name").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get ns: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "namespace/kube-system") {
			t.Fatalf("kubectl get ns printed %q", out)
		}
		out, err = cp.Kubectl(ctx, "version", "-o", "json").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl version: %v\n%s", err, out)
		}
		if strings.Count(string(out), `"gitVersion": "`+KubernetesVersion+`"`) != 2 {
			t.Fatalf("client and server should both report %s:\n%s", KubernetesVersion, out)
		}
		fi, err := os.Stat(cp.KubeconfigPath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin kubeconfig mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	})
}

// Two control planes run side by side on their own ports and directories.
func TestSideBySide(t *testing.T) {
	a := StartForTest(t, Options{WithoutScheduler: true, WithoutControllerManager: true})
	b := StartForTest(t, Options{WithoutScheduler: true, WithoutControllerManager: true})
	if a.APIServerURL == b.APIServerURL || a.Dir == b.Dir {
		t.Fatalf("control planes share %s / %s", a.APIServerURL, a.Dir)
	}
	ctx := context.Background()
	if _, err := a.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace leaked between control planes: %v", err)
	}
	// A restarted API server comes back on the same port with the same data.
	if err := a.RestartAPIServer(ctx, 0); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	if _, err := a.Client.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace lost over an API server restart: %v", err)
	}
}

func TestCachedBuildBuildsNothing(t *testing.T) {
	ctx := context.Background()
	if _, err := EnsureBinaries(ctx, BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := EnsureBinaries(ctx, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Built {
		t.Fatal("second EnsureBinaries call rebuilt the control plane")
	}
}

func TestBadEnvironment(t *testing.T) {
	ctx := context.Background()
	t.Run("no go", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := EnsureBinaries(ctx, BuildOptions{CacheDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "Go toolchain is not on PATH") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("cache directory cannot be created", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := EnsureBinaries(ctx, BuildOptions{CacheDir: filepath.Join(file, "cache")})
		if err == nil || !strings.Contains(err.Error(), "set VNODE_CACHE_DIR") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("failed build shows the go build error", func(t *testing.T) {
		src := t.TempDir()
		for _, m := range []string{"kubernetes", "etcd"} {
			if err := os.MkdirAll(filepath.Join(src, m), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, m, "go.mod"), []byte("module broken/"+m+"\n\ngo 1.26\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, m, "go.sum"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("GOPROXY", "off")
		_, err := EnsureBinaries(ctx, BuildOptions{CacheDir: t.TempDir(), SourceDir: src})
		if err == nil || !strings.Contains(err.Error(), "building kube-apiserver") || !strings.Contains(err.Error(), "k8s.io/kubernetes/cmd/kube-apiserver") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("busy port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		_, err = Start(ctx, Options{Dir: t.TempDir(), APIServerPort: port})
		if err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(port)+" on 127.0.0.1 is already in use") {
			t.Fatalf("got %v", err)
		}
	})
}

func createReadyVirtualNode(ctx context.Context, t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"type": "virtual-kubelet", "kubernetes.io/hostname": name}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: vkTaintKey, Value: vkTaintValue, Effect: corev1.TaintEffectNoSchedule}}},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("100"),
		corev1.ResourceMemory: resource.MustParse("400Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "TestReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
	}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("marking node ready: %v", err)
	}
}

func testPod(name string, tolerate bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"type": "virtual-kubelet"},
			Containers:   []corev1.Container{{Name: "c", Image: "busybox"}},
		},
	}
	if tolerate {
		p.Spec.Tolerations = []corev1.Toleration{{Key: vkTaintKey, Operator: corev1.TolerationOpEqual, Value: vkTaintValue, Effect: corev1.TaintEffectNoSchedule}}
	}
	return p
}

func newCSR(t *testing.T, cn string, org []string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: org}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
