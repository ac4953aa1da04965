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
		}
	}
	return n
}
