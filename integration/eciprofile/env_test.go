package eciprofile

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/identity"
)

const (
	ownNamespace = "vnode-system"
	account      = "eci-profile"
	virtualNode  = "vk-1"
	normalNode   = "normal-1"
)

// env is a control plane with manifests/eci-profile applied (its
// Deployment scaled to zero: the webhook runs in this process under the
// Deployment's service account, so the RBAC is the shipped one).
type env struct {
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	dyn    dynamic.Interface
	// saConfig authenticates as eci-profile's service account.
	saConfig *rest.Config
	// webhookClientCA signs the only client certificate the webhook
	// accepts: the one kube-apiserver presents to webhooks.
	webhookClientCA *controlplane.PKI
	hook            *runningHook
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func newEnv(ctx context.Context, tb testing.TB, opts controlplane.Options) *env {
	tb.Helper()
	ca, flags := webhookClientAuth(tb)
	opts.ExtraAPIServerFlags = append(opts.ExtraAPIServerFlags, flags...)
	cp := controlplane.StartForTest(tb, opts)
	e := &env{cp: cp, client: cp.Client, webhookClientCA: ca}
	var err error
	if e.dyn, err = dynamic.NewForConfig(cp.AdminConfig); err != nil {
		tb.Fatal(err)
	}
	e.kubectl(ctx, tb, "apply", "-k", filepath.Join(moduleRoot(), "manifests", "eci-profile"))
	e.kubectl(ctx, tb, "wait", "--for=condition=Established", "crd/selectors.eci.aliyun.com", "--timeout=60s")
	e.kubectl(ctx, tb, "-n", ownNamespace, "scale", "deployment/eci-profile", "--replicas=0")
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(4 * 3600))}}
	tr, err = cp.Client.CoreV1().ServiceAccounts(ownNamespace).CreateToken(ctx, account, tr, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("requesting a token for %s/%s: %v", ownNamespace, account, err)
	}
	e.saConfig = &rest.Config{Host: cp.APIServerURL, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.PKI.CAPEM()}, QPS: 50, Burst: 100}
	return e
}

// webhookClientAuth has kube-apiserver present a certificate from a CA
// of its own to every webhook, as a hardened cluster would.
func webhookClientAuth(tb testing.TB) (*controlplane.PKI, []string) {
	tb.Helper()
	ca, flags, err := controlplane.WebhookClientAuth(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return ca, flags
}

func (e *env) kubectl(ctx context.Context, tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := e.cp.Kubectl(ctx, args...).CombinedOutput(); err != nil {
		tb.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// runningHook is the webhook running in this process.
type runningHook struct {
	url      string
	registry *prometheus.Registry
	health   string
	metrics  string
	cancel   context.CancelFunc
	done     chan error
}

// startWebhook runs the webhook on loopback and points the shipped
// MutatingWebhookConfiguration at it by url (clearing its caBundle, which
// the webhook must fill in), then waits until it is ready.
func (e *env) startWebhook(ctx context.Context, tb testing.TB) *runningHook {
	tb.Helper()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		return l
	}
	wl, ml, hl := listen(), listen(), listen()
	clientCA, err := certs.NewCABundle(e.webhookClientCA.CACertPath)
	if err != nil {
		tb.Fatal(err)
	}
	h := &runningHook{url: "https://" + wl.Addr().String() + webhook.MutatePath, registry: prometheus.NewRegistry(),
		health: "http://" + hl.Addr().String(), metrics: "https://" + ml.Addr().String() + "/metrics", done: make(chan error, 1)}

	mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.Service = nil
		mwc.Webhooks[i].ClientConfig.URL = ptr.To(h.url)
		mwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if _, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}

	log := logrus.New()
	// Debug names every mutated pod: useful in tests, noise in benchmarks.
	if _, bench := tb.(*testing.B); !bench {
		log.SetLevel(logrus.DebugLevel)
	}
	log.SetOutput(tbWriter{tb})
	hctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- webhook.Run(hctx, webhook.Config{REST: e.saConfig, Namespace: ownNamespace, WebhookConfig: webhook.DefaultWebhookConfig,
			CertHosts: []string{"127.0.0.1"}, CertSyncInterval: 2 * time.Second, Resync: time.Minute,
			WebhookListener: wl, MetricsListener: ml, HealthListener: hl, Registry: h.registry, ClientCA: clientCA, Log: log})
	}()
	tb.Cleanup(func() { h.stop(tb) })
	e.hook = h
	// Ready: caches synced, selectors loaded, certificate served; and the
	// caBundle the API server will trust is in place.
	waitFor(ctx, tb, "the webhook to be ready and its caBundle written", func(ctx context.Context) (bool, error) {
		if err := httpGet(ctx, h.health+"/readyz"); err != nil {
			return false, nil
		}
		mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(mwc.Webhooks[0].ClientConfig.CABundle) > 0, nil
	})
	return h
}

func (h *runningHook) stop(tb testing.TB) {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			tb.Errorf("webhook.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		tb.Error("the webhook did not stop within 30s")
	}
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// registerNodes registers a big virtual node and a small normal node and
// keeps both Ready (Lease and Ready condition renewed) until tb ends.
func (e *env) registerNodes(ctx context.Context, tb testing.TB, normalCPU string) {
	tb.Helper()
	virt := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: virtualNode, Labels: map[string]string{
		identity.NodeTypeLabel: identity.NodeTypeVirtual, corev1.LabelHostname: virtualNode}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: identity.TaintKey, Value: identity.TaintValue, Effect: corev1.TaintEffectNoSchedule}}}}
	norm := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: normalNode, Labels: map[string]string{corev1.LabelHostname: normalNode}}}
	caps := map[string]corev1.ResourceList{
		virtualNode: {corev1.ResourceCPU: resource.MustParse("1000"), corev1.ResourceMemory: resource.MustParse("4Ti"), corev1.ResourcePods: resource.MustParse("5000")},
		normalNode:  {corev1.ResourceCPU: resource.MustParse(normalCPU), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")},
	}
	for _, n := range []*corev1.Node{virt, norm} {
		if _, err := e.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("registering node %s: %v", n.Name, err)
		}
	}
	hctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	beat := func() error {
		for _, name := range []string{virtualNode, normalNode} {
			if err := e.heartbeat(hctx, name, caps[name]); err != nil {
				return err
			}
		}
		return nil
	}
	if err := beat(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				if err := beat(); err != nil && hctx.Err() == nil {
					tb.Logf("node heartbeat: %v", err)
				}
			}
		}
	}()
	// The node lifecycle controller lifts the not-ready taint that
	// admission put on the new Nodes once it sees them Ready.
	waitFor(ctx, tb, "both nodes Ready and without a not-ready taint", func(ctx context.Context) (bool, error) {
		for _, name := range []string{virtualNode, normalNode} {
			n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, t := range n.Spec.Taints {
				if t.Key != identity.TaintKey {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// heartbeat renews a node's Lease and Ready condition, as a kubelet does.
func (e *env) heartbeat(ctx context.Context, name string, capacity corev1.ResourceList) error {
	now := metav1.NewMicroTime(time.Now())
	leases := e.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	lease, err := leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(40)), RenewTime: &now}}, metav1.CreateOptions{})
	case err == nil:
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("renewing the Lease of %s: %w", name, err)
	}
	node, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", name, err)
	}
	t := metav1.Now()
	node.Status.Capacity, node.Status.Allocatable = capacity, capacity
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: t, LastTransitionTime: t}}
	if _, err := e.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating the status of node %s: %w", name, err)
	}
	return nil
}

func waitFor(ctx context.Context, tb testing.TB, what string, cond wait.ConditionWithContextFunc) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		tb.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

func (e *env) createNamespace(ctx context.Context, tb testing.TB, name string, labels map[string]string) {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	// Pods need the namespace's default service account.
	waitFor(ctx, tb, "the default service account of "+name, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

var errStatus = errors.New("unexpected status")
