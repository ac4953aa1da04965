package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/eci/emulator/sandbox"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/local"
)

// childEnv makes this test binary a child of a test: "main" is
// vnode-local itself (its arguments are the command line), "probe" says
// whether the process runtime can isolate pods here.
const childEnv = "VNODE_LOCAL_TEST_CHILD"

// nobody is the unprivileged user (uid and gid) the rootless run is.
const nobody = 65534

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "main":
		main()
		os.Exit(0)
	case "probe":
		if err := sandbox.Probe(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Without root, where the kernel lets an unprivileged user make user
// namespaces, `vnode-local up` (make run) runs the whole system but the
// node's network and the edge tunnel, and says so: the node joins with
// certificates vnode-approver approved, the sample runs on it through
// eci-profile, logs and exec reach its pods, which the process runtime
// isolates (exec's hostname is the pod's), kubectl top lists them, and
// Ctrl-C leaves no process. The test runs this binary as vnode-local
// under uid and gid 65534, with a cache, binaries and manifests that user
// can read.
func TestUpCommandRootless(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root, so it cannot run vnode-local as another user (TestUpCommand runs it without root here)")
	}
	base, err := os.MkdirTemp("", "vnode-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home, run := filepath.Join(base, "home"), filepath.Join(base, "run")
	for _, d := range []string{home, run} {
		mkdirFor(t, d, 0o700)
	}
	bin := filepath.Join(base, "bin")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	vnodeLocal := filepath.Join(bin, "vnode-local")
	if err := linkOrCopy(self, vnodeLocal); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "VNODE_CACHE_DIR=" + filepath.Join(base, "cache"),
		"VNODE_K8SBUILD_DIR=" + filepath.Join(base, "k8sbuild")}
	asNobody := func(args ...string) *exec.Cmd {
		cmd := exec.Command(vnodeLocal, args...)
		cmd.Dir = home
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
			Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	probe := asNobody()
	probe.Env = append(env, childEnv+"=probe")
	out, err := probe.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Skipf("uid %d cannot isolate pods here, so its run would use the sim runtime (no logs or exec to check): %s", nobody, out)
	case err != nil:
		t.Skipf("uid %d cannot run %s (every directory above it must be searchable by others; TMPDIR=%q): %v", nobody, vnodeLocal, os.Getenv("TMPDIR"), err)
	}

	// The vnode binaries, built here (a user's build cache is cold).
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/vnode-kubelet", "./cmd/vnode-approver", "./cmd/eci-profile", "./cmd/edge-tunnel-server")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the vnode binaries: %v\n%s", err, out)
	}
	// The control plane and metrics-server from the cache (root's home is
	// not the user's to read), the modules keying it, and the manifests.
	ctx := context.Background()
	cp, err := controlplane.EnsureBinaries(ctx, controlplane.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := controlplane.EnsureMetricsServer(ctx, controlplane.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mkdirFor(t, filepath.Join(base, "cache"), 0o755)
	for _, set := range []string{cp.Dir, ms.Dir} {
		linkCacheSet(t, set, filepath.Join(base, "cache", filepath.Base(set)))
	}
	k8sbuild := os.Getenv("VNODE_K8SBUILD_DIR")
	if k8sbuild == "" {
		k8sbuild = filepath.Join("..", "..", "integration", "controlplane", "k8sbuild")
	}
	manifests := filepath.Join(base, "manifests")
	for from, to := range map[string]string{filepath.Join("..", "..", "manifests"): manifests, k8sbuild: filepath.Join(base, "k8sbuild")} {
		if err := os.CopyFS(to, os.DirFS(from)); err != nil {
			t.Fatalf("copying %s for uid %d: %v", from, nobody, err)
		}
	}

	dir := filepath.Join(run, "up")
	up := asNobody("up", "--dir", dir, "--manifests", manifests, "--bin-dir", bin)
	up.Env = append(env, childEnv+"=main")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	up.Stdout, up.Stderr = w, w
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- up.Wait(); close(finished) }()
	// A check that fails stops the run all the same; one that hangs, too.
	t.Cleanup(func() { _ = up.Process.Kill() })
	interruptOnCleanup(t, up.Process, finished)
	shown := readUp(r)
	if shown.kubeconfig == "" || !shown.sawPods {
		t.Fatalf("kubeconfig %q, sample pods Running on the virtual node: %v (command: %v)\n%s", shown.kubeconfig, shown.sawPods, <-done, shown.output)
	}
	client := checkUp(t, shown, dir, false)
	kubectl := kubectlFor(t, shown.kubeconfig)
	sampleLogs(t, kubectl)
	// The rootless sandbox gives each pod a UTS namespace of its own.
	pods, err := client.CoreV1().Pods(local.SampleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("the sample's pods: %v", err)
	}
	pod := pods.Items[0].Name
	if got := strings.TrimSpace(kubectl("-n", local.SampleNamespace, "exec", pod, "--", "hostname")); got != pod {
		t.Fatalf("kubectl exec %s -- hostname printed %q, want the pod's name (the sandbox isolates it)", pod, got)
	}
	// The control plane, vnode-kubelet, the add-ons and the pods' sandboxes.
	if n := processesUsing(dir); n < 8 {
		t.Fatalf("%d processes use the run's directory, want at least 8; the check after the stop would prove little", n)
	}
	stopUp(t, up.Process, done, dir)
}

// mkdirFor makes dir for uid nobody.
func mkdirFor(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// linkCacheSet makes to, a folder of the user's cache, hold the files of
// from (a built set with its stamp), hard-linked: they stay root's (a
// link shares its file's owner), readable and read-only to the user; the
// user's own lock file is made by the user.
func linkCacheSet(t *testing.T, from, to string) {
	t.Helper()
	mkdirFor(t, to, 0o755)
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ".lock" || !e.Type().IsRegular() {
			continue
		}
		if err := linkOrCopy(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// linkOrCopy hard-links from at to, or copies it where a link cannot be
// made (another file system).
func linkOrCopy(from, to string) error {
	if err := os.Link(from, to); err == nil {
		return nil
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	return errors.Join(err, dst.Close())
}
