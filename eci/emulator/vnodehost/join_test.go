package vnodehost

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
)

// sleeper stands in for a vnode-kubelet that runs but never joins; it
// leaves a mark when stopped.
func sleeper(t *testing.T) (bin, marks string) {
	marks = t.TempDir()
	return script(t, `trap 'touch "`+marks+`/stopped.$$"; exit 0' TERM; while :; do sleep 0.05; done`), marks
}

func kubeconfigFor(t *testing.T, server string, ca []byte, token string) []byte {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func lastEvent(v eci.VirtualNode) eci.VirtualNodeEvent { return v.Events[len(v.Events)-1] }

// A running node whose API server does not answer is Failed after the
// join timeout, naming the address, and its process is stopped (it was
// Pending forever while the process lived).
func TestUnreachableAPIServerFailsAfterJoinTimeout(t *testing.T) {
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", Delays: emulator.Delays{VirtualNode: time.Hour}})
	bin, marks := sleeper(t)
	startHostWith(t, Config{Emulator: em, Endpoint: "http://" + ep, Binary: bin, Dir: t.TempDir(), JoinTimeout: 300 * time.Millisecond})
	ca, err := controlplane.NewCA(t.TempDir(), "unreachable")
	if err != nil {
		t.Fatal(err)
	}
	c, id := createWith(t, ep, kubeconfigFor(t, "https://127.0.0.1:1", ca.CAPEM(), "abcdef.0123456789abcdef"), true, "t")
	v := waitNode(t, c, id, func(v eci.VirtualNode) bool { return v.Status == "Failed" })
	if ev := lastEvent(v); ev.Reason != ReasonUnreachable || ev.Type != "Warning" || !strings.Contains(ev.Message, "https://127.0.0.1:1") {
		t.Fatalf("events: %+v", v.Events)
	}
	waitCount(t, func() bool { m, _ := filepath.Glob(filepath.Join(marks, "stopped.*")); return len(m) == 1 })
}

// On a real API server: a token it does not know is rejected (401) and
// the node is Failed at once, with no join timeout; a valid bootstrap
// token whose node's certificate is never approved is Failed after the
// join timeout, pointing at vnode-approver.
func TestRejectedCredentialsAndUnapprovedCertificateFail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	cp := controlplane.StartForTest(t, controlplane.Options{WithoutScheduler: true, WithoutControllerManager: true})
	ctx := context.Background()
	const id, secret = "vnd123", "0123456789abcdef"
	if _, err := cp.Client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(id)},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey: []byte(id), bootstrapapi.BootstrapTokenSecretKey: []byte(secret),
			bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"), bootstrapapi.BootstrapTokenExtraGroupsKey: []byte(identity.BootstrapGroup),
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfigWith := func(token string) []byte { return kubeconfigFor(t, cp.APIServerURL, cp.PKI.CAPEM(), token) }

	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", Delays: emulator.Delays{VirtualNode: time.Hour}})
	bin, _ := sleeper(t)
	// The join timeout is long for the rejected node (it must fail before)
	// and elapses for the unapproved one while the test waits.
	join := 3 * time.Second
	startHostWith(t, Config{Emulator: em, Endpoint: "http://" + ep, Binary: bin, Dir: t.TempDir(), JoinTimeout: join, RejectGrace: 200 * time.Millisecond})

	c, bad := createWith(t, ep, kubeconfigWith("abcdef.0123456789abcdef"), true, "bad")
	v := waitNode(t, c, bad, func(v eci.VirtualNode) bool { return v.Status == "Failed" })
	if ev := lastEvent(v); ev.Reason != ReasonRejected || !strings.Contains(ev.Message, "401") || !strings.Contains(ev.Message, "bootstrap token") {
		t.Fatalf("events: %+v", v.Events)
	}
	// A ServiceAccount-mode kubeconfig with a revoked token, likewise.
	_, badSA := createWith(t, ep, kubeconfigWith("not-a-service-account-token"), false, "bad-sa")
	v = waitNode(t, c, badSA, func(v eci.VirtualNode) bool { return v.Status == "Failed" })
	if ev := lastEvent(v); ev.Reason != ReasonRejected || !strings.Contains(ev.Message, "ServiceAccount token") {
		t.Fatalf("events: %+v", v.Events)
	}

	_, unapproved := createWith(t, ep, kubeconfigWith(id+"."+secret), true, "unapproved")
	v = waitNode(t, c, unapproved, func(v eci.VirtualNode) bool { return v.Status == "Failed" })
	if ev := lastEvent(v); ev.Reason != ReasonCertNotApproved || !strings.Contains(ev.Message, "vnode-approver") || !strings.Contains(ev.Message, join.String()) {
		t.Fatalf("events: %+v", v.Events)
	}
}

// judge's table: which reason a node that is not Ready fails with, and when.
func TestJudge(t *testing.T) {
	h := &Host{cfg: Config{JoinTimeout: time.Minute, RejectGrace: 5 * time.Second}}
	start := time.Unix(1_000_000, 0)
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for _, c := range []struct {
		name      string
		bootstrap bool
		probes    []probe // one per 3 seconds from start
		at        time.Duration
		want      string // "" : not failed
	}{
		{"a 401 for less than the grace waits", true, []probe{{rejected: true}, {rejected: true}}, 3 * time.Second, ""},
		{"a 401 for the grace fails at once", true, []probe{{rejected: true}, {rejected: true}, {rejected: true}}, 6 * time.Second, ReasonRejected},
		{"a 401 that stops restarts the grace", false, []probe{{rejected: true}, {joined: true}, {rejected: true, joined: true}}, 6 * time.Second, ""},
		{"a 401 at the join timeout is a rejection", true, []probe{{rejected: true}}, time.Minute, ReasonRejected},
		{"unreachable waits for the join timeout", true, []probe{{unreachable: true, err: refused}}, 30 * time.Second, ""},
		{"unreachable at the join timeout", true, []probe{{unreachable: true, err: refused}}, time.Minute, ReasonUnreachable},
		{"bootstrap, accepted, no certificate", true, []probe{{err: errors.New("forbidden")}}, time.Minute, ReasonCertNotApproved},
		{"joined, Node never Ready", true, []probe{{joined: true}}, time.Minute, ReasonNodeNotReady},
		{"ServiceAccount, Node never Ready", false, []probe{{joined: true, err: errors.New("not found")}}, time.Minute, ReasonNodeNotReady},
	} {
		n := &node{info: emulator.VirtualNodeToHost{NodeName: "n", TLSBootstrap: c.bootstrap}, dir: t.TempDir(), started: start}
		var reason string
		var failed bool
		for i, p := range c.probes {
			n.last = p
			at := time.Duration(i) * 3 * time.Second
			if i == len(c.probes)-1 {
				at = c.at
			}
			reason, _, failed = h.judge(n, start.Add(at))
		}
		if failed != (c.want != "") || reason != c.want {
			t.Errorf("%s: failed %v with %q, want %q", c.name, failed, reason, c.want)
		}
	}
}
