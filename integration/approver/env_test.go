package approver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
)

const (
	approverNamespace = "vnode-system"
	approverAccount   = "vnode-approver"
	// nodeBootstrapper is the built-in role that may create and read CSRs;
	// the tests bind it to every adversary that must get a CSR through the
	// API at all, so that only vnode-approver stands between it and a
	// certificate.
	nodeBootstrapper = "system:node-bootstrapper"
)

// env is a control plane with manifests/vnode and manifests/approver
// applied, and vnode-approver running as a process under the approver's
// service account.
type env struct {
	cp  *controlplane.ControlPlane
	dir string
	// bin is the vnode-approver binary built from this tree.
	bin string
	// kubeconfig authenticates as system:serviceaccount:vnode-system:vnode-approver.
	kubeconfig string
	// args are extra vnode-approver flags for the next start.
	args     []string
	approver *approverProcess
	starts   int
}

// newEnv starts a control plane for tb, applies the manifests and builds
// vnode-approver; startApprover runs it.
func newEnv(ctx context.Context, tb testing.TB, opts controlplane.Options) *env {
	tb.Helper()
	e := &env{dir: tb.TempDir()}
	e.bin = buildApprover(ctx, tb, e.dir)
	e.cp = controlplane.StartForTest(tb, opts)
	for _, m := range []string{"vnode", "approver"} {
		e.kubectl(ctx, tb, "apply", "-k", filepath.Join(moduleRoot(), "manifests", m))
	}
	// The Deployment's pods would need a kubelet and the image; the process
	// started below plays their part with the same service account.
	e.kubectl(ctx, tb, "-n", approverNamespace, "scale", "deployment/vnode-approver", "--replicas=0")
	e.kubeconfig = filepath.Join(e.dir, "vnode-approver.kubeconfig")
	if err := controlplane.WriteKubeconfig(e.kubeconfig, e.serviceAccountConfig(ctx, tb, approverNamespace, approverAccount), approverAccount); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if e.approver == nil {
			return
		}
		if tb.Failed() {
			tb.Logf("--- vnode-approver log (%s) ends ---\n%s", e.approver.logPath, tail(e.approver.log(), 60))
		}
		if err := e.approver.stop(10 * time.Second); err != nil && !errors.Is(err, errAlreadyStopped) {
			tb.Errorf("stopping vnode-approver: %v", err)
		}
	})
	return e
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// buildApprover builds cmd/vnode-approver from this tree, so the process
// under test is never a stale binary.
func buildApprover(ctx context.Context, tb testing.TB, dir string) string {
	tb.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("finding the go tool to build vnode-approver: %v", err)
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", dir, "./cmd/vnode-approver")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building vnode-approver: %v\n%s", err, out)
	}
	return filepath.Join(dir, "vnode-approver")
}

func (e *env) kubectl(ctx context.Context, tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := e.cp.Kubectl(ctx, args...).CombinedOutput(); err != nil {
		tb.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startApprover runs vnode-approver as the Deployment does (leader election
// in vnode-system) and returns once its workers run. Debug logging names
// every CSR it ignores, which the tests wait for.
func (e *env) startApprover(ctx context.Context, tb testing.TB) {
	tb.Helper()
	e.starts++
	args := append([]string{
		"--kubeconfig=" + e.kubeconfig,
		"--leader-elect=true",
		"--leader-election-namespace=" + approverNamespace,
		// Port 0: other tests on this machine may hold the defaults.
		"--health-addr=127.0.0.1:0",
		"--metrics-addr=127.0.0.1:0",
		"--log-level=debug",
	}, e.args...)
	p, err := startApprover(e.bin, filepath.Join(e.dir, fmt.Sprintf("vnode-approver-%d.log", e.starts)), args...)
	if err != nil {
		tb.Fatal(err)
	}
	e.approver = p
	if err := p.waitForLines(ctx, time.Minute, `msg="vnode CSR approver started"`); err != nil {
		tb.Fatalf("vnode-approver did not start: %v", err)
	}
}

// ensureApprover starts vnode-approver if a subtest left it stopped (by
// failing between stop and start), so that one failure does not take the
// next subtests down too. An approver that exited by itself is an error.
func (e *env) ensureApprover(ctx context.Context, tb testing.TB) {
	tb.Helper()
	switch {
	case e.approver == nil:
	case e.approver.running():
		return
	default:
		tb.Errorf("vnode-approver exited (%v); log ends:\n%s", e.approver.err, tail(e.approver.log(), 30))
	}
	e.startApprover(ctx, tb)
}

// stopApprover stops vnode-approver gracefully (it releases its Lease, so
// the next start leads at once) and checks that it exited cleanly.
func (e *env) stopApprover(tb testing.TB) {
	tb.Helper()
	p := e.approver
	e.approver = nil
	if err := p.stop(10 * time.Second); err != nil {
		tb.Fatalf("stopping vnode-approver: %v", err)
	}
	checkLog(tb, p.log())
}

// checkApproverLog fails tb if the running approver was refused anything
// or logged an error (see checkLog).
func (e *env) checkApproverLog(tb testing.TB) {
	tb.Helper()
	if e.approver == nil {
		tb.Error("vnode-approver is not running")
		return
	}
	checkLog(tb, e.approver.log())
}

// checkLog fails tb if the approver was refused anything (its RBAC must be
// sufficient for every request it makes: informers, approvals,
// SubjectAccessReviews, events, the Lease) or logged an error.
func checkLog(tb testing.TB, log string) {
	tb.Helper()
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "is forbidden") || strings.Contains(line, "Forbidden"):
			tb.Errorf("vnode-approver was refused a request; its RBAC is insufficient: %s", line)
		case klogError.MatchString(line) || strings.Contains(line, "level=error") || strings.Contains(line, "level=fatal"):
			tb.Errorf("vnode-approver logged an error: %s", line)
		}
	}
}

// klogError matches an error line of klog (client-go's logger).
var klogError = regexp.MustCompile(`^E[0-9]{4} `)

// serviceAccountConfig creates the service account if needed and returns a
// config that authenticates with a token for it.
func (e *env) serviceAccountConfig(ctx context.Context, tb testing.TB, namespace, name string) *rest.Config {
	tb.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if _, err := e.cp.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("creating service account %s/%s: %v", namespace, name, err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(4 * 3600))}}
	tr, err := e.cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("requesting a token for %s/%s: %v", namespace, name, err)
	}
	return &rest.Config{
		Host:            e.cp.APIServerURL,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.cp.PKI.CAPEM()},
		QPS:             200,
		Burst:           400,
	}
}

// userClient authenticates as user in groups with a client certificate
// from the cluster CA.
func (e *env) userClient(tb testing.TB, user string, groups ...string) kubernetes.Interface {
	tb.Helper()
	cfg, err := e.cp.UserConfig(user, groups...)
	if err != nil {
		tb.Fatal(err)
	}
	return clientFor(tb, cfg)
}

func clientFor(tb testing.TB, cfg *rest.Config) kubernetes.Interface {
	tb.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatalf("creating a client for %s: %v", cfg.Host, err)
	}
	return c
}

// createToken creates bootstrap token <id>.<id>0123456789 (valid for an
// hour, in groups) and returns a config that authenticates with it. mutate,
// if given, edits the Secret first.
func createToken(ctx context.Context, tb testing.TB, cp *controlplane.ControlPlane, id string, groups []string, mutate func(*corev1.Secret)) *rest.Config {
	tb.Helper()
	secret := id + "0123456789"
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			"token-id":                       []byte(id),
			"token-secret":                   []byte(secret),
			"usage-bootstrap-authentication": []byte("true"),
			"auth-extra-groups":              []byte(strings.Join(groups, ",")),
			"expiration":                     []byte(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)),
		},
	}
	if mutate != nil {
		mutate(s)
	}
	if _, err := cp.Client.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("creating bootstrap token %s: %v", id, err)
	}
	return cp.BootstrapTokenConfig(id, secret)
}

// bindClusterRole binds role to subjects cluster-wide.
func bindClusterRole(ctx context.Context, tb testing.TB, client kubernetes.Interface, name, role string, subjects ...rbacv1.Subject) {
	tb.Helper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("binding %s: %v", name, err)
	}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}
}

func groupSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: name}
}

func serviceAccountSubject(namespace, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}
}

// approverProcess is vnode-approver running as a child process, its output
// in a log file.
type approverProcess struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // of Wait; read after done is closed
}

var errAlreadyStopped = errors.New("vnode-approver is not running")

func startApprover(bin, logPath string, args ...string) (*approverProcess, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the vnode-approver log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed outright takes the approver with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting vnode-approver: %w", err)
	}
	p := &approverProcess{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM and waits for a clean exit, killing the process after
// grace.
func (p *approverProcess) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("%w (it exited: %v)", errAlreadyStopped, p.err)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling vnode-approver: %w", err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("vnode-approver exited after SIGTERM with %w", p.err)
		}
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("vnode-approver did not exit within %s of SIGTERM", grace)
	}
}

func (p *approverProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *approverProcess) log() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.logPath, err)
	}
	return string(data)
}

// waitForLines polls the log until each pattern appears in some line. It
// fails early if the process exits.
func (p *approverProcess) waitForLines(ctx context.Context, timeout time.Duration, patterns ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		missing := missingLines(p.log(), patterns)
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("vnode-approver exited (%v) before logging %q; log ends:\n%s", p.err, missing, tail(p.log(), 30))
		case <-ctx.Done():
			return fmt.Errorf("no line with %q in the vnode-approver log after %s: %w", missing, timeout, ctx.Err())
		case <-t.C:
		}
	}
}

func missingLines(log string, patterns []string) []string {
	found := make([]bool, len(patterns))
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		for i, p := range patterns {
			found[i] = found[i] || strings.Contains(sc.Text(), p)
		}
	}
	var missing []string
	for i, p := range patterns {
		if !found[i] {
			missing = append(missing, p)
		}
	}
	return missing
}

func tail(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// The identity a virtual node's certificate carries.
var (
	vnodeGroup     = identity.VNodesGroup
	bootstrapGroup = identity.BootstrapGroup
)

func vnodeUser(node string) string { return identity.VNodeUserPrefix + node }
