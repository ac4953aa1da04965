package controlplane

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configure one control plane.
type Options struct {
	// Dir holds certificates, etcd data, kubeconfigs and logs. Default: a new
	// temporary directory, removed by Stop.
	Dir string
	// Binaries to run; default: EnsureBinaries with default BuildOptions.
	Binaries *Binaries
	// APIServerPort fixes the API server's port (default: a free one).
	APIServerPort int
	// APIServerAddress is where kube-apiserver listens and what it
	// advertises (default 127.0.0.1): an address that a network namespace
	// reaches too, as `make run`'s node does. Its serving certificate
	// names it besides 127.0.0.1; APIServerURL uses it.
	APIServerAddress net.IP
	// DisableCSRApprover turns off kube-controller-manager's built-in
	// csrapproving controller; CSRs are still signed once approved.
	DisableCSRApprover bool
	// EgressSelectorConfigFile is passed to kube-apiserver as
	// --egress-selector-config-file when set.
	EgressSelectorConfigFile string
	// KubeletPreferredAddressTypes is kube-apiserver's
	// --kubelet-preferred-address-types (default "InternalIP,Hostname"; a
	// repeated list flag would append, not replace, so it is an option).
	KubeletPreferredAddressTypes string
	// ExtraAPIServerFlags and ExtraControllerManagerFlags are appended.
	ExtraAPIServerFlags         []string
	ExtraControllerManagerFlags []string
	// WithoutScheduler and WithoutControllerManager leave those out.
	WithoutScheduler         bool
	WithoutControllerManager bool
	// Progress receives a line per step; nil discards.
	Progress io.Writer
}

// ControlPlane is a running etcd + kube-apiserver (+ scheduler and
// controller-manager). Stop it when done.
type ControlPlane struct {
	Dir            string
	PKI            *PKI
	APIServerURL   string
	KubeconfigPath string       // admin kubeconfig (0600)
	AdminConfig    *rest.Config // system:masters
	Client         kubernetes.Interface
	// KubeletClient is the certificate kube-apiserver presents to kubelets
	// (and virtual nodes) on :10250.
	KubeletClient *CertPair
	Binaries      *Binaries
	// ReadyAfter is how long each component took from exec to healthy.
	ReadyAfter map[string]time.Duration

	ownDir    bool
	apiserver *process
	procs     []*process // in start order
	stopOnce  sync.Once
	progress  io.Writer
}

// Start builds (if needed) and starts a control plane, returning once the
// API server is ready and the scheduler and controller-manager are healthy.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	bins := opts.Binaries
	if bins == nil {
		if bins, err = EnsureBinaries(ctx, BuildOptions{Progress: progress}); err != nil {
			return nil, err
		}
	}
	dir, ownDir := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vnode-controlplane-"); err != nil {
			return nil, fmt.Errorf("creating control-plane directory: %w", err)
		}
		ownDir = true
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("resolving control-plane directory: %w", err)
	}
	for _, d := range []string{"pki", "logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", filepath.Join(dir, d), err)
		}
	}
	cp := &ControlPlane{Dir: dir, Binaries: bins, ownDir: ownDir, progress: progress, ReadyAfter: map[string]time.Duration{}}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()

	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	if opts.APIServerPort != 0 {
		if err := portFree(opts.APIServerPort); err != nil {
			return nil, err
		}
		ports[0] = opts.APIServerPort
	}
	apiPort, etcdPort, etcdPeerPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]

	if cp.PKI, err = newPKI(filepath.Join(dir, "pki"), "ca"); err != nil {
		return nil, err
	}
	// The aggregation layer's request-header CA is separate from the client
	// CA, as in kubeadm: otherwise any client certificate could assert
	// identities through X-Remote-User.
	frontProxy, err := newPKI(filepath.Join(dir, "pki"), "front-proxy-ca")
	if err != nil {
		return nil, err
	}
	proxyClient, err := frontProxy.ClientCert("front-proxy-client", "front-proxy-client")
	if err != nil {
		return nil, err
	}
	apiAddr := net.ParseIP("127.0.0.1")
	if opts.APIServerAddress != nil {
		apiAddr = opts.APIServerAddress
	}
	cp.APIServerURL = "https://" + net.JoinHostPort(apiAddr.String(), strconv.Itoa(apiPort))
	if err := cp.writeCredentials(); err != nil {
		return nil, err
	}

	// etcd
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	etcd := cp.newProcess(Etcd,
		"--name=default",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn",
	)
	if err := cp.startAndWait(ctx, etcd, 30*time.Second, func() error { return httpOK(ctx, nil, etcdURL+"/health") }); err != nil {
		return nil, err
	}

	// kube-apiserver
	serving, err := cp.PKI.ServingCert("apiserver", []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1"), apiAddr})
	if err != nil {
		return nil, err
	}
	saPub, saKey, err := cp.PKI.serviceAccountKey()
	if err != nil {
		return nil, err
	}
	if cp.KubeletClient, err = cp.PKI.ClientCert("apiserver-kubelet-client", "kube-apiserver-kubelet-client"); err != nil {
		return nil, err
	}
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + apiAddr.String(), "--advertise-address=" + apiAddr.String(),
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--tls-cert-file=" + serving.CertPath, "--tls-private-key-file=" + serving.KeyPath,
		"--client-ca-file=" + cp.PKI.CACertPath,
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--enable-bootstrap-token-auth",
		"--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
		"--kubelet-client-certificate=" + cp.KubeletClient.CertPath,
		"--kubelet-client-key=" + cp.KubeletClient.KeyPath,
		"--kubelet-certificate-authority=" + cp.PKI.CACertPath,
		"--kubelet-preferred-address-types=" + cmp.Or(opts.KubeletPreferredAddressTypes, "InternalIP,Hostname"),
		"--requestheader-client-ca-file=" + frontProxy.CACertPath,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + proxyClient.CertPath,
		"--proxy-client-key-file=" + proxyClient.KeyPath,
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	if opts.EgressSelectorConfigFile != "" {
		apiArgs = append(apiArgs, "--egress-selector-config-file="+opts.EgressSelectorConfigFile)
	}
	apiArgs = append(apiArgs, opts.ExtraAPIServerFlags...)
	cp.apiserver = cp.newProcess(KubeAPIServer, apiArgs...)
	if err := cp.startAndWait(ctx, cp.apiserver, 90*time.Second, cp.apiserverReady); err != nil {
		return nil, err
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.AdminConfig); err != nil {
		return nil, fmt.Errorf("creating admin client: %w", err)
	}
	if err := cp.bindKubeletClient(ctx); err != nil {
		return nil, err
	}

	if !opts.WithoutControllerManager {
		kcm, err := cp.componentArgs("controller-manager", "system:kube-controller-manager", kcmPort)
		if err != nil {
			return nil, err
		}
		controllers := "--controllers=*,bootstrapsigner,tokencleaner"
		if opts.DisableCSRApprover {
			controllers += ",-csrapproving"
		}
		kcm = append(kcm, controllers,
			"--cluster-signing-cert-file="+cp.PKI.CACertPath,
			"--cluster-signing-key-file="+cp.PKI.CAKeyPath,
			"--service-account-private-key-file="+saKey,
			"--use-service-account-credentials=true",
			"--root-ca-file="+cp.PKI.CACertPath,
		)
		kcm = append(kcm, opts.ExtraControllerManagerFlags...)
		p := cp.newProcess(KubeControllerManager, kcm...)
		if err := cp.startAndWait(ctx, p, 60*time.Second, cp.healthz(ctx, kcmPort)); err != nil {
			return nil, err
		}
	}
	if !opts.WithoutScheduler {
		sched, err := cp.componentArgs("scheduler", "system:kube-scheduler", schedPort)
		if err != nil {
			return nil, err
		}
		p := cp.newProcess(KubeScheduler, sched...)
		if err := cp.startAndWait(ctx, p, 60*time.Second, cp.healthz(ctx, schedPort)); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// writeCredentials issues the admin identity and writes its kubeconfig.
func (cp *ControlPlane) writeCredentials() error {
	admin, err := cp.PKI.ClientCert("admin", "vnode-admin", "system:masters")
	if err != nil {
		return err
	}
	cp.AdminConfig = cp.configFor(admin)
	cp.KubeconfigPath = filepath.Join(cp.Dir, "admin.kubeconfig")
	return WriteKubeconfig(cp.KubeconfigPath, cp.AdminConfig, "vnode-admin")
}

func (cp *ControlPlane) configFor(pair *CertPair) *rest.Config {
	return &rest.Config{
		Host: cp.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.PKI.CAPEM(),
			CertData: pair.CertPEM,
			KeyData:  pair.KeyPEM,
		},
		// Tests create objects in bursts; client-go's default 5 QPS would
		// measure the client's limiter, not the system.
		QPS:   200,
		Burst: 400,
	}
}

// componentArgs are the flags shared by kube-controller-manager and
// kube-scheduler: a client-cert kubeconfig, delegated authn/authz and a
// serving certificate from the cluster CA so health checks verify TLS.
func (cp *ControlPlane) componentArgs(name, user string, port int) ([]string, error) {
	client, err := cp.PKI.ClientCert(name, user)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(cp.Dir, name+".kubeconfig")
	if err := WriteKubeconfig(kubeconfig, cp.configFor(client), user); err != nil {
		return nil, err
	}
	serving, err := cp.PKI.ServingCert(name+"-serving", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	return append(DelegatingServerFlags(kubeconfig, port, serving), "--leader-elect=false", "--v=1"), nil
}

// bindKubeletClient grants the API server's kubelet client identity the
// built-in kubelet API role, as kubeadm-style clusters do, so a kubelet that
// authorises callers with SubjectAccessReview admits the API server.
func (cp *ControlPlane) bindKubeletClient(ctx context.Context) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vnode-test:kube-apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "kube-apiserver-kubelet-client"}},
	}
	_, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding the API server's kubelet client: %w", err)
	}
	return nil
}

func (cp *ControlPlane) newProcess(name string, args ...string) *process {
	p := &process{
		name:    name,
		path:    cp.Binaries.Path(name),
		args:    args,
		logPath: filepath.Join(cp.Dir, "logs", name+".log"),
	}
	cp.procs = append(cp.procs, p)
	return p
}

// startAndWait starts p and polls ready until it succeeds, p exits (the
// error then carries p's log tail), ctx ends or timeout passes.
func (cp *ControlPlane) startAndWait(ctx context.Context, p *process, timeout time.Duration, ready func() error) error {
	start := time.Now()
	if err := p.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if done, _ := p.exited(); done {
			return p.exitError()
		}
		if last = ready(); last == nil {
			cp.ReadyAfter[p.name] = time.Since(start)
			fmt.Fprintf(cp.progress, "%s ready in %s\n", p.name, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (last check: %v); log %s ends:\n%s", p.name, timeout, last, p.logPath, p.logTail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (cp *ControlPlane) apiserverReady() error {
	rc, err := rest.RESTClientFor(withCodec(cp.AdminConfig))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return rc.Get().AbsPath("/readyz").Do(ctx).Error()
}

func (cp *ControlPlane) healthz(ctx context.Context, port int) func() error {
	pool := x509.NewCertPool()
	pool.AddCert(cp.PKI.CACert)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	return func() error { return httpOK(ctx, client, url) }
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// port with the same flags, returning once it is ready: for tests that
// check a component survives an API server outage.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context, down time.Duration) error {
	cp.apiserver.stop(10 * time.Second)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	return cp.startAndWait(ctx, cp.apiserver, 90*time.Second, cp.apiserverReady)
}

// Stop stops every process (newest first) and removes the directory if
// Start created it. It is safe to call more than once.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() {
		for i := len(cp.procs) - 1; i >= 0; i-- {
			cp.procs[i].stop(10 * time.Second)
		}
		if cp.ownDir {
			_ = os.RemoveAll(cp.Dir)
		}
	})
}

// RSS returns each running component's resident set size in bytes.
func (cp *ControlPlane) RSS() map[string]int64 {
	out := make(map[string]int64, len(cp.procs))
	for _, p := range cp.procs {
		if rss, err := p.rss(); err == nil {
			out[p.name] = rss
		}
	}
	return out
}

// LogTails returns the last n lines of every component's log, keyed by name.
func (cp *ControlPlane) LogTails(n int) map[string]string {
	out := make(map[string]string, len(cp.procs))
	for _, p := range cp.procs {
		out[p.name] = p.logTail(n)
	}
	return out
}

// CreateNamespace creates a namespace and waits until its default service
// account exists, so pods can be created in it at once.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for the default service account in %s: %w", name, err)
	}
	return nil
}

// UserConfig returns a rest.Config that authenticates as user in groups with
// a client certificate from the cluster CA.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	pair, err := cp.PKI.ClientCert("user-"+sanitize(user), user, groups...)
	if err != nil {
		return nil, err
	}
	return cp.configFor(pair), nil
}

// BootstrapTokenConfig returns a rest.Config that authenticates with the
// bootstrap token id.secret (the caller creates the token Secret).
func (cp *ControlPlane) BootstrapTokenConfig(id, secret string) *rest.Config {
	return &rest.Config{
		Host:            cp.APIServerURL,
		BearerToken:     id + "." + secret,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.PKI.CAPEM()},
		QPS:             200,
		Burst:           400,
	}
}

// Kubectl returns a kubectl command using the admin kubeconfig.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, cp.Binaries.Path(Kubectl), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cp.KubeconfigPath)
	return cmd
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// freePorts reserves n distinct free loopback ports by binding them all at
// once, then releases them for the components to bind.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscallEADDRINUSE) {
			return fmt.Errorf("port %d on 127.0.0.1 is already in use: stop what listens there or choose another port", port)
		}
		return fmt.Errorf("port %d on 127.0.0.1 cannot be used: %w", port, err)
	}
	return l.Close()
}
