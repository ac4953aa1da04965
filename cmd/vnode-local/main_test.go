package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// `vnode-local cluster` prints a working KUBECONFIG and, on Ctrl-C, stops
// every process it started.
func TestClusterCommandCtrlC(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	r, w := io.Pipe()
	cmd := newRootCommand()
	cmd.SetOut(w)
	cmd.SetArgs([]string{"cluster", "--dir", dir})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(context.Background()); w.Close() }()

	var kubeconfig string
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		line := lines.Text()
		if k, ok := strings.CutPrefix(line, "export KUBECONFIG="); ok {
			kubeconfig = k
		}
		if strings.HasPrefix(line, "press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, r)
	if kubeconfig == "" {
		t.Fatalf("no KUBECONFIG line printed (command ended: %v)", <-done)
	}
	if !filepath.IsAbs(kubeconfig) {
		t.Errorf("KUBECONFIG %q is not absolute", kubeconfig)
	}
	bins, err := controlplane.EnsureBinaries(context.Background(), controlplane.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubectl := exec.Command(bins.Path(controlplane.Kubectl), "get", "ns")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if out, err := kubectl.CombinedOutput(); err != nil || !strings.Contains(string(out), "kube-system") {
		t.Fatalf("kubectl get ns: %v\n%s", err, out)
	}
	if n := processesUsing(dir); n == 0 {
		t.Fatal("found no control-plane process using the cluster directory; the check below would prove nothing")
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cluster command: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("cluster command did not stop on SIGINT")
	}
	if n := processesUsing(dir); n != 0 {
		t.Fatalf("%d control-plane processes still running after Ctrl-C", n)
	}
}

// processesUsing counts live processes whose command line mentions dir.
func processesUsing(dir string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	// An instance's PID 1 names its sandbox, under dir; its containers'
	// processes share its PID namespace.
	instances := map[string]bool{}
	var others []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if strings.Contains(string(stat), ") Z ") {
			continue // a zombie is already dead
		}
		if strings.Contains(string(cmdline), dir) {
			n++
			if strings.HasPrefix(string(cmdline), "vnode-sandbox\x00") {
				ns, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid"))
				instances[ns] = true
			}
			continue
		}
		others = append(others, e.Name())
	}
	for _, pid := range others {
		if ns, err := os.Readlink(filepath.Join("/proc", pid, "ns", "pid")); err == nil && instances[ns] {
			n++
		}
	}
	return n
}

// `vnode-local up` brings the sample Deployment to Running on the virtual
// node, prints how to use it, and on Ctrl-C leaves no process behind.
func TestUpCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "up")
	r, w := io.Pipe()
	cmd := newRootCommand()
	cmd.SetOut(w)
	cmd.SetArgs([]string{"up", "--dir", dir, "--manifests", filepath.Join("..", "..", "manifests")})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(context.Background()); w.Close() }()
	var kubeconfig string
	var sawPods bool
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		line := lines.Text()
		if k, ok := strings.CutPrefix(line, "export KUBECONFIG="); ok {
			kubeconfig = k
		}
		if strings.HasPrefix(line, "hello-") && strings.Contains(line, "Running") && strings.Contains(line, "cn-hangzhou.vnd-local") {
			sawPods = true
		}
		if strings.HasPrefix(line, "press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, r)
	if kubeconfig == "" || !sawPods {
		t.Fatalf("kubeconfig %q, sample pods Running on the virtual node: %v (command: %v)", kubeconfig, sawPods, <-done)
	}
	bins, err := controlplane.EnsureBinaries(context.Background(), controlplane.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubectl := exec.Command(bins.Path(controlplane.Kubectl), "logs", "deploy/hello")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if out, err := kubectl.CombinedOutput(); err != nil || !strings.Contains(string(out), "hello from hello-") {
		t.Fatalf("kubectl logs: %v\n%s", err, out)
	}
	if n := processesUsing(dir); n < 6 {
		t.Fatalf("%d processes use the directory, want the 4 components and 2 containers at least", n)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("up did not stop on SIGINT")
	}
	// Container processes run in sandboxes under dir; the control plane too.
	deadline := time.Now().Add(15 * time.Second)
	for processesUsing(dir) != 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := processesUsing(dir); n != 0 {
		t.Fatalf("%d processes left after Ctrl-C", n)
	}
}
