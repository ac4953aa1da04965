package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/vnodectl"
)

// env is one control plane and a HOME of its own for the CLI.
type env struct {
	cp   *controlplane.ControlPlane
	home string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	cp := controlplane.StartForTest(t, controlplane.Options{})
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	t.Setenv("VNODE_CONFIG", filepath.Join(home, ".vnode", "config"))
	return &env{cp: cp, home: home}
}

// vnode runs the CLI in this process, as the admin unless args name
// another --kubeconfig.
func (e *env) vnode(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := vnodectl.NewCommand(&out, &out)
	hasKubeconfig := false
	for _, a := range args {
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			hasKubeconfig = true
		}
	}
	if !hasKubeconfig {
		args = append(args, "--kubeconfig", e.cp.KubeconfigPath)
	}
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	t.Logf("$ vnode %s\n%s(err: %v)", strings.Join(args, " "), out.String(), err)
	return out.String(), err
}

func (e *env) mustVnode(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.vnode(t, args...)
	if err != nil {
		t.Fatalf("vnode %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) deployKubeconfig() string {
	return filepath.Join(e.home, ".vnode", "deploy", "kubeconfig")
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// goCaches are go's build and module caches as found before any test
// moves HOME (newEnv): under a new HOME, go build would start from an empty
// cache and compile everything again (minutes instead of seconds).
var goCaches = func() []string {
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		return nil
	}
	v := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(v) != 3 {
		return nil
	}
	return []string{"GOCACHE=" + v[0], "GOMODCACHE=" + v[1], "GOPATH=" + v[2]}
}()

// buildBinary builds ./cmd/NAME into a temporary directory.
func buildBinary(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = moduleRoot()
	cmd.Env = append(os.Environ(), goCaches...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

// runApprover runs vnode-approver outside the cluster, as `make run`
// does, with the admin's kubeconfig and leader election.
func (e *env) runApprover(t *testing.T) {
	t.Helper()
	bin := buildBinary(t, "vnode-approver")
	cmd := exec.Command(bin, "--kubeconfig", e.cp.KubeconfigPath, "--metrics-addr=", "--health-addr=", "--leader-elect=true")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vnode-approver's log:\n%s", logs.String())
		}
	})
}
