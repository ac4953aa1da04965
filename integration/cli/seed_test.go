package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/emulator/vnodehost"
)

// Seed 004's whole procedure, against the emulator hosting a real
// vnode-kubelet: config default, edit, (bootstrap: addon enable
// vnode-approver), cluster setup, validate, create --wait, list, a pod
// with the seed's nodeSelector and toleration runs, delete refused with
// instances and accepted after, clean.
func TestSeedProcedureBootstrap(t *testing.T)      { seedProcedure(t, true) }
func TestSeedProcedureServiceAccount(t *testing.T) { seedProcedure(t, false) }

func seedProcedure(t *testing.T, bootstrap bool) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kubelet := buildBinary(t, "vnode-kubelet")
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim",
		// The host reports the nodes' status; this delay never elapses.
		Delays: emulator.Delays{VirtualNode: time.Hour}})
	host, err := vnodehost.New(vnodehost.Config{Emulator: em, Endpoint: "http://" + ep, Binary: kubelet, Dir: t.TempDir(), Log: logrus.New()})
	if err != nil {
		t.Fatal(err)
	}
	hostDone := make(chan struct{})
	go func() { _ = host.Run(ctx); close(hostDone) }()
	t.Cleanup(func() { cancel(); <-hostDone })

	// config default -> edit.
	tmpl := e.mustVnode(t, "config", "default")
	edited := strings.NewReplacer("<yourAccessKeyID>", "AKID", "<yourAccessKeySecret>", "SECRET",
		"vsw-xxxxxxxxxxxxxxxxxxxxx", "vsw-1", "sg-xxxxxxxxxxxxxxxxxxxx", "sg-1",
		"# endpoint: http://127.0.0.1:8880", "endpoint: http://"+ep).Replace(tmpl)
	if err := os.MkdirAll(filepath.Join(e.home, ".vnode"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.home, ".vnode", "config"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustVnode(t, "config")

	if bootstrap {
		e.mustVnode(t, "addon", "enable", "vnode-approver")
		e.runApprover(t)
		e.mustVnode(t, e.setupArgs(bootstrapFlags()...)...)
	} else {
		e.mustVnode(t, e.setupArgs()...)
	}
	waitFor(t, ctx, "validate to pass", func() bool {
		_, err := e.vnode(t, "cluster", "validate")
		return err == nil
	})

	out := e.mustVnode(t, "create", "--wait", "--wait-timeout", "3m")
	id := regexp.MustCompile(`^\{"RequestId":"[^"]+","VirtualNodeId":"(vnd-[a-z0-9]+)"\}`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("create printed:\n%s", out)
	}
	nodeName := "cn-hangzhou." + id[1]
	if row := strings.Split(strings.TrimSpace(e.mustVnode(t, "list")), "\n")[1]; !regexp.MustCompile(`Ready\s+true\s+cn-hangzhou-`).MatchString(row) {
		t.Fatalf("list: %q, want Ready and schedulable", row)
	}

	if bootstrap {
		e.approvedCSR(t, ctx)
	}
	e.podRunsThenDelete(t, ctx, id[1], nodeName)
}

// approvedCSR: the node's certificate came from a CSR vnode-approver
// approved.
func (e *env) approvedCSR(t *testing.T, ctx context.Context) {
	t.Helper()
	csrs, err := e.cp.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	approved := false
	for _, c := range csrs.Items {
		for _, cond := range c.Status.Conditions {
			if c.Spec.Username == "system:bootstrap:"+tokenID && cond.Type == certificatesv1.CertificateApproved && len(c.Status.Certificate) > 0 {
				approved = true
			}
		}
	}
	if !approved {
		t.Fatal("no CSR of the bootstrap token was approved and signed")
	}
}

func (e *env) podRunsThenDelete(t *testing.T, ctx context.Context, id, nodeName string) {
	t.Helper()

	// A pod with the seed's nodeSelector and toleration.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "on-eci", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"type": "virtual-kubelet"},
			Tolerations:  []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}},
			Containers:   []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}},
		},
	}
	if _, err := e.cp.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the pod to run on the virtual node", func() bool {
		p, err := e.cp.Client.CoreV1().Pods("default").Get(ctx, "on-eci", metav1.GetOptions{})
		return err == nil && p.Spec.NodeName == nodeName && p.Status.Phase == corev1.PodRunning
	})

	if _, err := e.vnode(t, "delete", id); err == nil || !strings.Contains(err.Error(), "kubectl drain "+nodeName) {
		t.Fatalf("delete with a running pod: %v", err)
	}
	if err := e.cp.Client.CoreV1().Pods("default").Delete(ctx, "on-eci", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The node deletes the pod's instance, then the pod.
	waitFor(t, ctx, "the pod to go", func() bool {
		_, err := e.cp.Client.CoreV1().Pods("default").Get(ctx, "on-eci", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	e.mustVnode(t, "delete", id)
	e.mustVnode(t, "cluster", "clean")
	e.nothingCreated(t, ctx, "after clean")
}
