package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/local"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/vnodectl"
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

// `vnode-local up` runs seed 004's procedure: the virtual node joins by
// TLS bootstrap with a certificate vnode-approver approved, the sample's
// pods land on it through eci-profile; as root the node runs in a network
// namespace of its own and kube-apiserver reaches it through the edge
// tunnel (logs, exec, the node's stats through the API server); on Ctrl-C
// no process, mount, network namespace or veth is left behind.
func TestUpCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "up")
	r, w := io.Pipe()
	cmd := newRootCommand()
	cmd.SetOut(w)
	cmd.SetArgs([]string{"up", "--dir", dir, "--manifests", filepath.Join("..", "..", "manifests")})
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- cmd.ExecuteContext(context.Background()); w.Close(); close(finished) }()
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A check that fails stops the run all the same, so that it leaves
	// neither processes nor its network namespace behind.
	interruptOnCleanup(t, self, finished)
	up := readUp(r)
	if up.kubeconfig == "" || !up.sawPods {
		t.Fatalf("kubeconfig %q, sample pods Running on the virtual node: %v (command: %v)\n%s", up.kubeconfig, up.sawPods, <-done, up.output)
	}
	asRoot := os.Geteuid() == 0
	client := checkUp(t, up, dir, asRoot)
	ctx := context.Background()
	kubectl := kubectlFor(t, up.kubeconfig)
	if !asRoot {
		sampleLogs(t, kubectl)
		stopUp(t, self, done, dir)
		return
	}
	if up.namespace == "" || up.veth == "" || up.metrics == nil {
		t.Fatalf("as root, the output shows no network namespace (%q), veth (%q) or tunnel metrics line (%v)", up.namespace, up.veth, up.metrics)
	}
	// Node traffic has no way but the tunnel (the egress selector): each
	// of these adds to the bytes the tunnel carried from the node.
	scrape := tunnelScraper(t, up.metrics)
	before := scrape()
	if sessions := before["vnode_tunnel_sessions"]; sessions != 1 {
		t.Fatalf("tunnel sessions %v, want the node's one", sessions)
	}
	sampleLogs(t, kubectl)
	afterLogs := scrape()
	if out := kubectl("-n", local.SampleNamespace, "exec", "deploy/hello", "--", "sh", "-c", "echo through the tunnel"); !strings.Contains(out, "through the tunnel") {
		t.Fatalf("kubectl exec:\n%s", out)
	}
	afterExec := scrape()
	const fromNode = `vnode_tunnel_bytes_total{direction="from_node"}`
	if !(before[fromNode] < afterLogs[fromNode] && afterLogs[fromNode] < afterExec[fromNode]) || afterExec["vnode_tunnel_dial_duration_seconds_count"] < 1 {
		t.Fatalf("the tunnel's bytes from the node: %v before, %v after logs, %v after exec; streams dialed %v",
			before[fromNode], afterLogs[fromNode], afterExec[fromNode], afterExec["vnode_tunnel_dial_duration_seconds_count"])
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: identity.NodeTypeLabel + "=" + identity.NodeTypeVirtual})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("virtual nodes: %v", err)
	}
	node := nodes.Items[0].Name
	if out := kubectl("get", "--raw", "/api/v1/nodes/"+node+"/proxy/stats/summary"); !strings.Contains(out, `"nodeName":"`+node+`"`) {
		t.Fatalf("the node's stats through the API server:\n%s", out)
	}
	if afterStats := scrape(); afterStats[fromNode] <= afterExec[fromNode] {
		t.Fatal("the node's stats did not come through the tunnel")
	}
	// 4 control-plane components, vnode-kubelet, vnode-approver,
	// eci-profile, edge-tunnel-server and the 2 containers.
	if n := processesUsing(dir); n < 10 {
		t.Fatalf("%d processes use the directory, want at least 10", n)
	}
	stopUp(t, self, done, dir)
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), dir) {
		t.Errorf("mounts of the run are left after Ctrl-C:\n%s", mounts)
	}
	if _, err := os.Stat("/var/run/netns/" + up.namespace); err == nil {
		t.Errorf("network namespace %s is left after Ctrl-C", up.namespace)
	}
	if _, err := net.InterfaceByName(up.veth); err == nil {
		t.Errorf("veth %s is left after Ctrl-C", up.veth)
	}
}

// upOutput is what `vnode-local up` printed up to its "press Ctrl-C"
// line, and what the checks read from it.
type upOutput struct {
	output, kubeconfig, vnodeConfig, addonList string
	namespace, veth                            string   // the node's network namespace and veth (as root)
	metrics                                    []string // the tunnel's metrics: CA, certificate, key, URL (as root)
	sawPods                                    bool     // the sample's pods shown Running on the virtual node
}

// readUp reads up's output until it says the system runs; the rest of r
// is drained so that up never blocks writing.
func readUp(r io.Reader) *upOutput {
	up := &upOutput{}
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		line := lines.Text()
		up.output += line + "\n"
		if k, ok := strings.CutPrefix(line, "export KUBECONFIG="); ok {
			up.kubeconfig = k
		}
		if f := strings.Fields(line); len(f) == 5 && f[0] == "$" && f[1] == "ip" && f[2] == "netns" && f[3] == "add" {
			up.namespace = f[4]
		}
		if f := strings.Fields(line); len(f) > 4 && f[0] == "$" && f[1] == "ip" && f[2] == "link" && f[3] == "add" {
			up.veth = f[4]
		}
		if args, ok := strings.CutPrefix(line, "  vnode addon list "); ok {
			up.addonList, _, _ = strings.Cut(args, "   #")
		}
		if k, ok := strings.CutPrefix(line, "export VNODE_CONFIG="); ok {
			up.vnodeConfig = k
		}
		if m := tunnelMetricsLine.FindStringSubmatch(line); m != nil {
			up.metrics = m[1:]
		}
		if strings.HasPrefix(line, "hello-") && strings.Contains(line, "Running") && strings.Contains(line, "cn-hangzhou.vnd-") {
			up.sawPods = true
		}
		if strings.HasPrefix(line, "press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, r)
	return up
}

// checkUp checks what a run shows with or without root: the procedure's
// commands, a start without errors in one format, kubectl top, the node's
// certificates approved by vnode-approver, the sample sent to the node by
// eci-profile, the add-ons found outside the cluster and, without root,
// the note naming what the run cannot show. It returns an admin client.
func checkUp(t *testing.T, up *upOutput, dir string, asRoot bool) kubernetes.Interface {
	t.Helper()
	wants := []string{"$ vnode cluster setup --bootstrap", "$ vnode addon enable vnode-approver", "$ vnode addon enable eci-profile",
		"$ vnode create --wait", "  vnode list", "/proxy/stats/summary"}
	if asRoot {
		wants = append(wants, "$ vnode addon enable edge-tunnel", "$ edge-tunnel-server ")
	} else {
		wants = append(wants, "# Not root (run \"sudo make run\" to see them), so this run cannot show",
			"#  - the node's own network", "#  - the edge tunnel")
	}
	for _, want := range wants {
		if !strings.Contains(up.output, want) {
			t.Errorf("the output does not show %q", want)
		}
	}
	// A healthy start logs no error, in one format (logrus text).
	for _, line := range strings.Split(up.output, "\n") {
		if strings.Contains(line, "level=error") || klogLine.MatchString(line) {
			t.Errorf("a healthy start printed: %s", line)
		}
	}
	// Nor does the hosted virtual node's own log.
	nodeLogs, _ := filepath.Glob(filepath.Join(dir, "eci", "vnodes", "*", "vnode-kubelet.log"))
	if len(nodeLogs) != 1 {
		t.Fatalf("hosted virtual node logs: %v, want one", nodeLogs)
	}
	if b, err := os.ReadFile(nodeLogs[0]); err != nil || strings.Contains(string(b), "level=error") {
		t.Errorf("the virtual node's log (%v):\n%s", err, b)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", up.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	kubectlTop(t, up.kubeconfig, up.output)
	approvedBootstrapCSR(t, ctx, client)
	nodeCertFromApprovedCSR(t, ctx, client, nodeLogs[0])
	landedThroughECIProfile(t, ctx, client)
	// The printed `vnode addon list` finds every add-on running outside
	// the cluster (the tunnel's only as root).
	var list bytes.Buffer
	vnode := vnodectl.NewCommand(&list, &list)
	vnode.SetArgs(append(strings.Fields("addon list "+up.addonList), "--config", up.vnodeConfig, "--kubeconfig", up.kubeconfig))
	if err := vnode.ExecuteContext(ctx); err != nil {
		t.Fatalf("vnode addon list %s: %v\n%s", up.addonList, err, list.String())
	}
	outside := map[string]bool{}
	for _, l := range strings.Split(list.String(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.Contains(l, "Running outside the cluster") {
			outside[f[0]] = true
		}
	}
	if !outside["vnode-approver"] || !outside["eci-profile"] || outside["edge-tunnel"] != asRoot {
		t.Errorf("vnode addon list %s:\n%s", up.addonList, list.String())
	}
	return client
}

// kubectlFor runs the cached kubectl against kubeconfig, failing the test
// if it fails.
func kubectlFor(t *testing.T, kubeconfig string) func(args ...string) string {
	bins, err := controlplane.EnsureBinaries(context.Background(), controlplane.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bins.Path(controlplane.Kubectl), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}

// interruptOnCleanup sends up (the process p runs it in) Ctrl-C when the
// test ends, unless it has finished, and waits for it to.
func interruptOnCleanup(t *testing.T, p *os.Process, finished <-chan struct{}) {
	t.Cleanup(func() {
		select {
		case <-finished:
			return
		default:
		}
		_ = p.Signal(os.Interrupt)
		select {
		case <-finished:
		case <-time.After(90 * time.Second):
		}
	})
}

// sampleLogs: kubectl logs shows what the sample's container writes.
func sampleLogs(t *testing.T, kubectl func(args ...string) string) {
	t.Helper()
	if out := kubectl("-n", local.SampleNamespace, "logs", "deploy/hello"); !strings.Contains(out, "hello from hello-") {
		t.Fatalf("kubectl logs:\n%s", out)
	}
}

// stopUp sends up (the process p runs it in) Ctrl-C and checks that it
// stops and leaves no process.
func stopUp(t *testing.T, p *os.Process, done <-chan error, dir string) {
	t.Helper()
	if err := p.Signal(os.Interrupt); err != nil {
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

// tunnelMetricsLine is the closing block's line that reads the tunnel's
// metrics.
var tunnelMetricsLine = regexp.MustCompile(`curl -s --cacert (\S+) --cert (\S+) --key (\S+) (\S+) \|`)

// tunnelScraper reads the tunnel server's metrics as the printed line
// does, returning each sample by name and labels.
func tunnelScraper(t *testing.T, m []string) func() map[string]float64 {
	ca, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(m[1], m[2])
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	return func() map[string]float64 {
		t.Helper()
		resp, err := c.Get(m[3])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the tunnel's metrics: %s", resp.Status)
		}
		samples := map[string]float64{}
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			name, value, ok := strings.Cut(lines.Text(), " ")
			if v, err := strconv.ParseFloat(value, 64); ok && err == nil && !strings.HasPrefix(name, "#") {
				// The node's label is the only one vnode_tunnel_sessions has.
				if strings.HasPrefix(name, "vnode_tunnel_sessions{") {
					name = "vnode_tunnel_sessions"
				}
				samples[name] += v
			}
		}
		return samples
	}
}

// nodeCertFromApprovedCSR: the client certificate the hosted node uses is
// the one a CSR carries that vnode-approver approved (the approval
// subresource was written by vnode-approver, not by anyone else).
func nodeCertFromApprovedCSR(t *testing.T, ctx context.Context, client kubernetes.Interface, nodeLog string) {
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(filepath.Dir(nodeLog), "pki", "vnode-client-current.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("the node's client certificate file holds no PEM block")
	}
	csrs, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range csrs.Items {
		issued, _ := pem.Decode(c.Status.Certificate)
		if issued == nil || !bytes.Equal(issued.Bytes, block.Bytes) {
			continue
		}
		var managers []string
		for _, f := range c.ManagedFields {
			if f.Subresource == "approval" {
				managers = append(managers, f.Manager)
			}
		}
		if len(managers) != 1 || !strings.HasPrefix(managers[0], "vnode-approver") {
			t.Fatalf("CSR %s, which issued the node's certificate, was approved by %v, want vnode-approver", c.Name, managers)
		}
		return
	}
	t.Fatal("no CSR issued the node's client certificate")
}

// klogLine is klog's header: "I1205 00:10:16.123456".
var klogLine = regexp.MustCompile(`^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6}`)

// approvedBootstrapCSR: the node's client certificate came from a CSR of
// the bootstrap token that vnode-approver approved (kube-controller-
// manager's approver is off in this cluster), and its serving certificate
// from a kubelet-serving CSR it approved too.
func approvedBootstrapCSR(t *testing.T, ctx context.Context, client kubernetes.Interface) {
	t.Helper()
	csrs, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var client_, serving bool
	var seen []string
	for _, c := range csrs.Items {
		seen = append(seen, fmt.Sprintf("%s %s %s %v", c.Name, c.Spec.SignerName, c.Spec.Username, c.Status.Conditions))
		approved := false
		for _, cond := range c.Status.Conditions {
			approved = approved || cond.Type == certificatesv1.CertificateApproved
		}
		if !approved || len(c.Status.Certificate) == 0 {
			continue
		}
		switch {
		case c.Spec.SignerName == certificatesv1.KubeAPIServerClientSignerName && strings.HasPrefix(c.Spec.Username, "system:bootstrap:"):
			client_ = true
		case c.Spec.SignerName == certificatesv1.KubeletServingSignerName && strings.HasPrefix(c.Spec.Username, identity.VNodeUser("cn-hangzhou.vnd-")):
			serving = true
		}
	}
	if !client_ || !serving {
		t.Fatalf("approved and signed: the bootstrap token's client CSR %v, the node's serving CSR %v; CSRs:\n%s", client_, serving, strings.Join(seen, "\n"))
	}
}

// landedThroughECIProfile: the sample Deployment names no node, its pods
// carry eci-profile's nodeSelector and run on the virtual node.
func landedThroughECIProfile(t *testing.T, ctx context.Context, client kubernetes.Interface) {
	t.Helper()
	d, err := client.AppsV1().Deployments(local.SampleNamespace).Get(ctx, "hello", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Spec.Template.Spec.NodeSelector) != 0 || len(d.Spec.Template.Spec.Tolerations) != 0 {
		t.Fatalf("the sample Deployment itself sends its pods to virtual nodes: %v %v", d.Spec.Template.Spec.NodeSelector, d.Spec.Template.Spec.Tolerations)
	}
	pods, err := client.CoreV1().Pods(local.SampleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("the sample's pods: %v", err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeSelector["type"] != "virtual-kubelet" || !strings.HasPrefix(p.Spec.NodeName, "cn-hangzhou.vnd-") {
			t.Fatalf("pod %s: nodeSelector %v on node %q, want eci-profile's type=virtual-kubelet on the virtual node", p.Name, p.Spec.NodeSelector, p.Spec.NodeName)
		}
	}
}

// kubectlTop: metrics-server, scraping the virtual node's kubelet API with
// the cluster CA verifying its serving certificate (no
// --kubelet-insecure-tls), serves kubectl top for the node and the
// sample's pods through kube-apiserver's aggregation layer.
func kubectlTop(t *testing.T, kubeconfig, output string) {
	t.Helper()
	for _, want := range []string{"manifests/metrics-server", "$ kubectl top node"} {
		if !strings.Contains(output, want) {
			t.Errorf("the output does not show %q", want)
		}
	}
	for _, line := range strings.Split(output, "\n") {
		if strings.HasPrefix(line, "$ metrics-server ") && strings.Contains(line, "insecure") {
			t.Errorf("metrics-server does not verify the node's certificate: %s", line)
		}
	}
	kubectl := kubectlFor(t, kubeconfig)
	top := func(args ...string) string {
		t.Helper()
		return kubectl(append(append([]string{"top"}, args...), "--no-headers")...)
	}
	// NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%), with figures.
	node := regexp.MustCompile(`(?m)^cn-hangzhou\.vnd-\S+\s+\d+m\s+\d+%\s+\d+[KMG]i\s+\d+%`)
	if out := top("node"); !node.MatchString(out) {
		t.Errorf("kubectl top node does not show the virtual node's figures:\n%s", out)
	}
	pod := regexp.MustCompile(`(?m)^hello-\S+\s+\d+m\s+\d+[KMG]i\s*$`)
	if out := top("pod", "-n", local.SampleNamespace); len(pod.FindAllString(out, -1)) != 2 {
		t.Errorf("kubectl top pod does not show the sample's 2 pods:\n%s", out)
	}
}
