// Package local runs the whole vnode system on this machine and shows, as
// it goes, the procedure a user follows on a real cluster (seed 004): a
// real control plane; the ECI emulator, which runs pods as local processes
// and hosts the virtual nodes it creates as real vnode-kubelet processes,
// as the cloud does; then, through the vnode CLI's own code, `vnode
// config`, `vnode cluster setup --bootstrap`, `vnode addon enable`, `vnode
// create --wait`; and a sample Deployment that eci-profile sends to the
// virtual node. It is what `make run` starts, and what its test checks.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/sandbox"
	"github.com/vnode-project/vnode/eci/emulator/vnodehost"
	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/vnodectl"
)

const (
	region = "cn-hangzhou"
	// addonNamespace is where manifests/approver and manifests/eci-profile
	// put their ServiceAccounts.
	addonNamespace = "vnode-system"
	// SampleNamespace is the sample's namespace; its label matches the
	// namespaceSelector of manifests/eci-profile/configmap-example.yaml.
	SampleNamespace = "hello"
)

// binaries are the commands the system runs as processes: the emulator's
// hosted virtual nodes, and the add-ons outside the cluster.
var binaries = []string{"vnode-kubelet", "vnode-approver", "eci-profile", "edge-tunnel-server"}

// Options configure the local system.
type Options struct {
	Dir       string // state, certificates and logs (default: a temporary directory)
	Manifests string // the repository's manifests directory
	// BinDir holds vnode-kubelet, vnode-approver, eci-profile and
	// edge-tunnel-server. Default:
	// beside this executable (make run builds bin/), else they are built
	// from the module into <Dir>/bin.
	BinDir string
	// Sample applies manifests/samples/hello.yaml and waits for it.
	Sample bool
	Out    io.Writer
	// IsolationProbe says why the emulator's process runtime cannot
	// isolate pods here (default sandbox.Probe); then pods run on the
	// sim runtime, and the run says so.
	IsolationProbe func() error
}

// addonTokenLife is how long each add-on's ServiceAccount token lives; it
// is renewed before it ends (token.go).
const addonTokenLife = time.Hour

// podRuntime picks the emulator's runtime: "process" where it can isolate
// every instance from this machine, else "sim" (nothing runs: logs and
// exec have nothing real to show), saying why on out.
func podRuntime(probe func() error, out io.Writer) string {
	if probe == nil {
		probe = sandbox.Probe
	}
	if err := probe(); err != nil {
		fmt.Fprintf(out, "# The process runtime cannot isolate pods from this machine (%v),\n# so pods run on the sim runtime: they reach Running, but no process runs, so logs and exec show nothing real.\n", err)
		return "sim"
	}
	return "process"
}

// System is the running local system.
type System struct {
	CP       *controlplane.ControlPlane
	Emulator *emulator.Emulator
	// ConfigPath is the vnode config file (what ~/.vnode/config is).
	ConfigPath string
	// NodeName is the virtual node `vnode create` made.
	NodeName string
	BinDir   string
	// ECIProfileHealth is eci-profile's health endpoint (it runs outside
	// the cluster, so `vnode addon list` needs it).
	ECIProfileHealth string
	// Network is the node's network namespace (as root; nil otherwise).
	Network *netns.Host
	// Tunnel is the edge tunnel server kube-apiserver reaches the node
	// through (with Network; nil otherwise).
	Tunnel *Tunnel

	deployKubeconfig string
	webhookClientCA  string // the CA of kube-apiserver's client certificate for webhooks
	manifests        string
	out              io.Writer
	stop             []func()
}

// Start brings everything up; Stop tears it down.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	s := &System{out: o.Out, manifests: o.Manifests}
	if s.out == nil {
		s.out = io.Discard
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vnode-local-"); err != nil {
			return nil, fmt.Errorf("creating the run directory: %w", err)
		}
		s.stop = append(s.stop, func() { _ = os.RemoveAll(dir) })
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("resolving the run directory: %w", err)
	}
	s.section("1. The node's network, and kube-apiserver's way to it through the edge tunnel")
	s.nodeNetwork()
	// Only vnode-approver approves CSRs here: kube-controller-manager's
	// built-in approver is off, so an approved node certificate is its work.
	cpOpts := controlplane.Options{Dir: dir, Progress: s.out, DisableCSRApprover: true}
	if s.Network != nil {
		// kube-apiserver listens where the node reaches it, and sends its
		// node traffic through the tunnel.
		if s.Tunnel, err = s.prepareTunnel(dir); err != nil {
			return nil, err
		}
		cpOpts.APIServerAddress = s.Network.HostIP
		cpOpts.EgressSelectorConfigFile = s.Tunnel.egressSelectorConfig
	}

	s.section("2. The cluster: a real control plane on this host (the first run builds it, a few minutes)")
	// kube-apiserver presents a client certificate to webhooks, and
	// eci-profile's port accepts no other caller.
	webhookClientDir := filepath.Join(dir, "webhook-client")
	if err := os.MkdirAll(webhookClientDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", webhookClientDir, err)
	}
	webhookClientCA, apiserverFlags, err := controlplane.WebhookClientAuth(webhookClientDir)
	if err != nil {
		return nil, err
	}
	s.webhookClientCA = webhookClientCA.CACertPath
	cpOpts.ExtraAPIServerFlags = apiserverFlags
	if s.CP, err = controlplane.Start(ctx, cpOpts); err != nil {
		return nil, err
	}
	s.stop = append(s.stop, s.CP.Stop)
	if s.BinDir, err = s.findBinaries(ctx, o.BinDir); err != nil {
		return nil, err
	}

	s.section("3. The cloud: the ECI emulator, which runs pods as local processes and each virtual node as a vnode-kubelet process")
	id, secret := "LTAI-local-"+randomString(6, hexDigits), randomString(16, hexDigits)
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	logger.SetOutput(s.out)
	var emulatorAddr string
	var stopEmulator func()
	s.Emulator, emulatorAddr, stopEmulator, err = emulator.StartLocal(emulator.Config{Credentials: map[string]string{id: secret},
		Region: region, Runtime: podRuntime(o.IsolationProbe, s.out), DataDir: filepath.Join(s.CP.Dir, "eci"), Logger: logger,
		ListenAddr: net.JoinHostPort(s.listenHost(), "0")})
	if err != nil {
		return nil, err
	}
	s.stop = append(s.stop, stopEmulator)
	hostCfg := vnodehost.Config{Emulator: s.Emulator, Endpoint: "http://" + emulatorAddr,
		Binary: filepath.Join(s.BinDir, "vnode-kubelet"), Dir: filepath.Join(s.Emulator.DataDir(), "vnodes"), Log: logger}
	if s.Network != nil {
		// As the cloud runs a virtual node on a network of its own, which
		// dials out to the cluster and its edge tunnel.
		hostCfg.Network = vnodehost.Network{Namespace: s.Network.Name, IP: s.Network.IP.String()}
		hostCfg.Tunnel = s.Tunnel.hostedTunnel()
		fmt.Fprintf(s.out, "# virtual nodes run in network namespace %s at %s and join the edge tunnel at %s\n", s.Network.Name, s.Network.IP, s.Tunnel.AgentAddr)
	}
	host, err := vnodehost.New(hostCfg)
	if err != nil {
		return nil, err
	}
	hctx, hcancel := context.WithCancel(context.Background())
	hdone := make(chan struct{})
	go func() { _ = host.Run(hctx); close(hdone) }()
	s.stop = append(s.stop, func() { hcancel(); <-hdone })
	fmt.Fprintf(s.out, "ECI API at http://%s (virtual nodes' files and logs in %s)\n", emulatorAddr, filepath.Join(s.Emulator.DataDir(), "vnodes"))

	s.section("4. The vnode config file (~/.vnode/config), pointed at the emulator")
	s.ConfigPath = filepath.Join(s.CP.Dir, "vnode", "config")
	s.deployKubeconfig = filepath.Join(s.CP.Dir, "vnode", "deploy", "kubeconfig")
	file := &config.File{Kind: config.Kind, CurrentContext: "local", Contexts: []config.Context{{
		Name: "local", RegionID: region, AccessKeyID: id, AccessKeySecret: secret,
		VSwitchIDs: config.StringList{"vsw-local"}, SecurityGroupID: "sg-local",
		Kubeconfig: s.deployKubeconfig, Endpoint: "http://" + emulatorAddr,
	}}}
	if err := file.Save(s.ConfigPath); err != nil {
		return nil, err
	}
	fmt.Fprintf(s.out, "export KUBECONFIG=%s\nexport VNODE_CONFIG=%s\n", s.CP.KubeconfigPath, s.ConfigPath)
	if _, err := s.vnode(ctx, "config"); err != nil {
		return nil, err
	}

	s.section("5. Set the cluster up for TLS bootstrap")
	tokenID, tokenSecret := randomString(6, lowerAlnum), randomString(16, lowerAlnum)
	if _, err := s.vnode(ctx, "cluster", "setup", "--bootstrap", "--bootstrap-token-id", tokenID, "--bootstrap-token-secret", tokenSecret,
		"--apiserver-address", s.CP.APIServerURL, "--cluster-ca-path", s.CP.PKI.CACertPath, "--output", s.deployKubeconfig); err != nil {
		return nil, err
	}

	s.section("6. The add-ons. Their Deployments cannot run here (no kubelet for ordinary pods), so each runs as a local process under its manifest's ServiceAccount")
	if err := s.approver(ctx); err != nil {
		return nil, err
	}
	if s.Tunnel != nil {
		if err := s.edgeTunnel(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.eciProfile(ctx); err != nil {
		return nil, err
	}
	if err := s.metricsServer(ctx); err != nil {
		return nil, err
	}

	s.section("7. Create the virtual node: the emulator starts its vnode-kubelet, which joins by TLS bootstrap; vnode-approver approves its certificates")
	out, err := s.vnode(ctx, "create", "--wait", "--wait-timeout", "3m")
	if err != nil {
		return nil, err
	}
	var created struct{ VirtualNodeId string }
	if line, _, _ := strings.Cut(out, "\n"); json.Unmarshal([]byte(line), &created) != nil || created.VirtualNodeId == "" {
		return nil, fmt.Errorf("vnode create printed no VirtualNodeId:\n%s", out)
	}
	s.NodeName = region + "." + created.VirtualNodeId
	if err := s.show(ctx, "get", "csr"); err != nil {
		return nil, err
	}
	if err := s.show(ctx, "get", "nodes", "-o", "wide"); err != nil {
		return nil, err
	}

	if o.Sample {
		s.section("8. A sample Deployment, in a namespace eci-profile sends to virtual nodes (it has no nodeSelector of its own)")
		if err := s.show(ctx, "apply", "-f", filepath.Join(s.manifests, "samples", "hello.yaml")); err != nil {
			return nil, err
		}
		if err := s.waitSample(ctx); err != nil {
			return nil, err
		}
		if err := s.show(ctx, "-n", SampleNamespace, "get", "pods", "-o", "wide"); err != nil {
			return nil, err
		}
		if err := s.showTop(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Stop stops the add-ons, the virtual nodes, the emulator (and its
// processes) and the control plane.
func (s *System) Stop() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
	s.stop = nil
}

func (s *System) section(title string) { fmt.Fprintf(s.out, "\n== %s\n", title) }

// vnode runs the vnode CLI in this process (its own code, as the binary
// would run it) against the run's config file and admin kubeconfig, which
// the printed exports name.
func (s *System) vnode(ctx context.Context, args ...string) (string, error) {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if i > 0 && args[i-1] == "--bootstrap-token-secret" {
			shown[i] = strings.Repeat("*", len(a)) // a credential: never printed
		}
	}
	fmt.Fprintf(s.out, "$ vnode %s\n", strings.Join(shown, " "))
	var buf bytes.Buffer
	w := io.MultiWriter(&buf, s.out)
	cmd := vnodectl.NewCommand(w, w)
	cmd.SetArgs(append(args, "--config", s.ConfigPath, "--kubeconfig", s.CP.KubeconfigPath))
	if err := cmd.ExecuteContext(ctx); err != nil {
		return buf.String(), fmt.Errorf("vnode %s: %w", strings.Join(shown, " "), err)
	}
	return buf.String(), nil
}

// show runs kubectl as the admin, printing the command and its output.
func (s *System) show(ctx context.Context, args ...string) error {
	fmt.Fprintf(s.out, "$ kubectl %s\n", strings.Join(args, " "))
	b, err := s.CP.Kubectl(ctx, args...).CombinedOutput()
	s.out.Write(b)
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// approver enables vnode-approver and runs its command as in its
// Deployment, with leader election.
func (s *System) approver(ctx context.Context) error {
	if _, err := s.vnode(ctx, "addon", "enable", "vnode-approver"); err != nil {
		return err
	}
	if err := s.outsideCluster(ctx, addonNamespace, "vnode-approver"); err != nil {
		return err
	}
	kubeconfig, err := s.serviceAccountKubeconfig(ctx, addonNamespace, "vnode-approver")
	if err != nil {
		return err
	}
	if err := s.process(ctx, "vnode-approver", "--kubeconfig", kubeconfig, "--leader-elect=true",
		"--leader-election-namespace="+addonNamespace, "--health-addr=", "--metrics-addr="); err != nil {
		return err
	}
	return s.waitFor(ctx, "vnode-approver to hold its Lease", func(ctx context.Context) (bool, error) {
		l, err := s.CP.Client.CoordinationV1().Leases(addonNamespace).Get(ctx, "vnode-approver", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", nil
	})
}

// eciProfile enables eci-profile with the example selectors and runs the
// webhook on loopback. kube-apiserver cannot reach a Service without a
// kubelet behind it, so the webhook configuration names the process by
// url; eci-profile fills in its caBundle as it does in the cluster.
func (s *System) eciProfile(ctx context.Context) error {
	if _, err := s.vnode(ctx, "addon", "enable", "eci-profile"); err != nil {
		return err
	}
	if err := s.outsideCluster(ctx, addonNamespace, "eci-profile"); err != nil {
		return err
	}
	// Selectors before the webhook starts: ready means they are loaded.
	if err := s.show(ctx, "apply", "-f", filepath.Join(s.manifests, "eci-profile", "configmap-example.yaml")); err != nil {
		return err
	}
	listen, err := freeAddr("127.0.0.1")
	if err != nil {
		return err
	}
	health, err := freeAddr("127.0.0.1")
	if err != nil {
		return err
	}
	url := "https://" + listen + webhook.MutatePath
	fmt.Fprintf(s.out, "# kube-apiserver calls the webhook at %s instead of through the Service\n", url)
	mwc, err := s.CP.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the eci-profile webhook configuration: %w", err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.Service = nil
		mwc.Webhooks[i].ClientConfig.URL = ptr.To(url)
		mwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if _, err := s.CP.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pointing the eci-profile webhook at %s: %w", url, err)
	}
	kubeconfig, err := s.serviceAccountKubeconfig(ctx, addonNamespace, "eci-profile")
	if err != nil {
		return err
	}
	s.ECIProfileHealth = "http://" + health + "/healthz"
	if err := s.process(ctx, "eci-profile", "--kubeconfig", kubeconfig, "--namespace="+addonNamespace, "--service=eci-profile",
		"--webhook-config="+webhook.DefaultWebhookConfig, "--cert-host=127.0.0.1", "--listen-addr="+listen,
		"--client-ca-file="+s.webhookClientCA, "--metrics-addr=", "--health-addr="+health); err != nil {
		return err
	}
	readyz := "http://" + health + "/readyz"
	probe := &http.Client{Timeout: 2 * time.Second}
	return s.waitFor(ctx, "eci-profile to be ready and its caBundle written", func(ctx context.Context) (bool, error) {
		resp, err := probe.Get(readyz)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		mwc, err := s.CP.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
		return err == nil && len(mwc.Webhooks) > 0 && len(mwc.Webhooks[0].ClientConfig.CABundle) > 0, nil
	})
}

// outsideCluster removes an add-on's Deployment, whose pods no kubelet
// here would run: the add-on runs as a local process instead, and `vnode
// addon list` reports it running outside the cluster.
func (s *System) outsideCluster(ctx context.Context, namespace, deployment string) error {
	fmt.Fprintf(s.out, "# no kubelet here runs %s's pods: its command runs as a local process instead\n", deployment)
	return s.show(ctx, "-n", namespace, "delete", "deployment", deployment)
}

// serviceAccountKubeconfig writes a kubeconfig with a token the
// TokenRequest API issues for the add-on's ServiceAccount, so the process
// has exactly the RBAC manifests/ grants it.
func (s *System) serviceAccountKubeconfig(ctx context.Context, namespace, account string) (string, error) {
	request := func(ctx context.Context) (string, time.Time, error) {
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(addonTokenLife / time.Second))}}
		tr, err := s.CP.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account, tr, metav1.CreateOptions{})
		if err != nil {
			return "", time.Time{}, fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", namespace, account, err)
		}
		return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
	}
	issued := time.Now()
	token, expires, err := request(ctx)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.CP.Dir, "addons")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	tokenPath := filepath.Join(dir, account+".token")
	if err := writeToken(tokenPath, token); err != nil {
		return "", err
	}
	path := filepath.Join(dir, account+".kubeconfig")
	cfg := &rest.Config{Host: s.CP.APIServerURL, BearerTokenFile: tokenPath, TLSClientConfig: rest.TLSClientConfig{CAData: s.CP.PKI.CAPEM()}}
	if err := controlplane.WriteKubeconfig(path, cfg, "system:serviceaccount:"+namespace+":"+account); err != nil {
		return "", err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		renewToken(rctx, clock.RealClock{}, tokenPath, request, issued, expires, time.Minute, func(err error) {
			fmt.Fprintf(s.out, "# renewing %s's token failed, retrying in a minute: %v\n", account, err)
		})
	}()
	s.stop = append(s.stop, func() { cancel(); <-done })
	fmt.Fprintf(s.out, "# %s: ServiceAccount %s/%s's token in %s (TokenRequest API, %s, renewed at 80%% of its life as the kubelet renews a pod's)\n",
		path, namespace, account, tokenPath, addonTokenLife)
	return path, nil
}

// process starts one of the binaries with its log in the run's logs
// directory; Stop ends it with SIGTERM (SIGKILL after 20s).
func (s *System) process(ctx context.Context, name string, args ...string) error {
	bin := name // one of the binaries, or a path (metrics-server's, in the cache)
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(s.BinDir, name)
	}
	name = filepath.Base(name)
	logPath := filepath.Join(s.CP.Dir, "logs", name+".log")
	fmt.Fprintf(s.out, "$ %s %s >%s 2>&1 &\n", name, strings.Join(args, " "), logPath)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Gone with this process even if it is killed without a chance to stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	s.stop = append(s.stop, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return nil
}

func (s *System) waitFor(ctx context.Context, what string, cond wait.ConditionWithContextFunc) error {
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, cond); err != nil {
		return fmt.Errorf("waiting for %s (logs in %s): %w", what, filepath.Join(s.CP.Dir, "logs"), err)
	}
	return nil
}

// waitSample waits until the sample's pods run on the virtual node.
func (s *System) waitSample(ctx context.Context) error {
	return s.waitFor(ctx, "the sample's pods to run on "+s.NodeName, func(ctx context.Context) (bool, error) {
		l, err := s.CP.Client.CoreV1().Pods(SampleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
		if err != nil || len(l.Items) == 0 {
			return false, nil
		}
		for _, p := range l.Items {
			if p.Spec.NodeName != s.NodeName || p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		return true, nil
	})
}

// findBinaries returns the directory holding the binaries: dir, else
// beside this executable, else built from the module into the run
// directory.
func (s *System) findBinaries(ctx context.Context, dir string) (string, error) {
	has := func(dir string) bool {
		for _, b := range binaries {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s does not hold %s", dir, strings.Join(binaries, ", "))
		}
		return dir, nil
	}
	if self, err := os.Executable(); err == nil && has(filepath.Dir(self)) {
		return filepath.Dir(self), nil
	}
	root, err := filepath.Abs(filepath.Dir(s.manifests))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("%s is not beside this executable and %s is no module to build it from", strings.Join(binaries, ", "), root)
	}
	dir = filepath.Join(s.CP.Dir, "bin")
	args := []string{"build", "-o", dir + "/"}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	fmt.Fprintf(s.out, "$ go %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", strings.Join(binaries, ", "), err, b)
	}
	return dir, nil
}

// freeAddr is host:port with a port free on host now, for a process
// that listens there later.
func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const (
	hexDigits  = "0123456789abcdef"
	lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"
)

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(errors.New("crypto/rand failed: " + err.Error()))
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b)
}
