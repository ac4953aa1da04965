package eciprofile

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/identity"
)

const initialSelectors = `[
  {"name": "eci-ns", "namespaceSelector": {"matchLabels": {"eci": "true"}},
   "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi", "owner": "cm-first"}}},
  {"name": "batch", "objectSelector": {"matchLabels": {"tier": "batch"}},
   "effect": {"annotations": {"owner": "cm-second", "second": "yes"}, "labels": {"profiled": "yes"}}}
]`

// TestECIProfile runs the acceptance scenarios in order on one control
// plane: they share the nodes, the webhook and its selectors, and the last
// ones change or stop the webhook.
func TestECIProfile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(ctx, t, controlplane.Options{})
	e.registerNodes(ctx, t, "1")
	e.setConfigMap(ctx, t, map[string]string{"selectors": initialSelectors, "vSwitchIds": "vsw-test1", "securityGroupId": "sg-test1"})
	hook := e.startWebhook(ctx, t)
	e.createNamespace(ctx, t, "apps", map[string]string{"eci": "true"})
	e.createNamespace(ctx, t, "plain", nil)
	e.createNamespace(ctx, t, "prefer", nil)

	t.Run("a Deployment in a selected namespace lands on the virtual node", func(t *testing.T) {
		labels := map[string]string{"app": "web"}
		tmpl := newPod("", labels, "100m")
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}}}
		if dep.Spec.Template.Spec.NodeSelector != nil || dep.Spec.Template.Spec.Tolerations != nil {
			t.Fatal("the Deployment must not place its pods itself")
		}
		if _, err := e.client.AppsV1().Deployments("apps").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var pods []corev1.Pod
		waitFor(ctx, t, "2 bound pods of Deployment web", func(ctx context.Context) (bool, error) {
			l, err := e.client.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return false, err
			}
			pods = l.Items
			bound := 0
			for _, p := range pods {
				if p.Spec.NodeName != "" {
					bound++
				}
			}
			return bound == 2, nil
		})
		for _, p := range pods {
			if p.Spec.NodeName != virtualNode || !targetsVirtual(&p) {
				t.Errorf("pod %s on %q, nodeSelector %v, tolerations %v", p.Name, p.Spec.NodeName, p.Spec.NodeSelector, p.Spec.Tolerations)
			}
			for k, want := range map[string]string{"k8s.aliyun.com/eci-use-specs": "2-4Gi", "k8s.aliyun.com/eci-vswitch": "vsw-test1", "k8s.aliyun.com/eci-security-group": "sg-test1"} {
				if got := p.Annotations[k]; got != want {
					t.Errorf("pod %s: annotation %s = %q, want %q", p.Name, k, got, want)
				}
			}
		}
	})

	t.Run("a pod matching nothing is untouched", func(t *testing.T) {
		pod := newPod("lonely", map[string]string{"app": "lonely"}, "")
		got := e.createPod(ctx, t, "plain", pod)
		if got.Spec.NodeSelector != nil || tolerates(got) || got.Spec.Affinity != nil || len(got.Annotations) != 0 || len(got.Labels) != 1 {
			t.Fatalf("pod changed: nodeSelector %v tolerations %v affinity %v annotations %v labels %v",
				got.Spec.NodeSelector, got.Spec.Tolerations, got.Spec.Affinity, got.Annotations, got.Labels)
		}
		if n := e.waitBound(ctx, t, "plain", "lonely").Spec.NodeName; n != normalNode {
			t.Fatalf("bound to %s", n)
		}
	})

	t.Run("one Selector wins by priority then name, then every ConfigMap match; the pod's own values win", func(t *testing.T) {
		sel := map[string]any{"matchLabels": map[string]any{"sel": "yes"}}
		e.applySelector(ctx, t, "b-fair", map[string]any{"objectLabels": sel, "priority": 10, "policy": map[string]any{"fair": map[string]any{}},
			"effect": map[string]any{"annotations": map[string]any{"winner": "b"}}})
		e.applySelector(ctx, t, "a-virtual", map[string]any{"objectLabels": sel, "priority": 10,
			"effect": map[string]any{"annotations": map[string]any{"winner": "a", "own": "selector"}}})
		e.applySelector(ctx, t, "z-low", map[string]any{"objectLabels": sel, "priority": 1, "policy": map[string]any{"normalNodeOnly": map[string]any{}},
			"effect": map[string]any{"annotations": map[string]any{"winner": "z"}}})
		probe := newPod("probe", map[string]string{"sel": "yes"}, "")
		waitFor(ctx, t, "the three Selectors to be loaded", func(ctx context.Context) (bool, error) {
			p, err := e.dryRun(ctx, "apps", probe)
			return err == nil && p.Annotations["winner"] == "a", err
		})

		pod := newPod("ordered", map[string]string{"sel": "yes", "tier": "batch", "profiled": "mine"}, "")
		pod.Annotations = map[string]string{"own": "mine", "k8s.aliyun.com/eci-use-specs": "ecs.c6.large"}
		pod.Spec.Tolerations = []corev1.Toleration{{Key: identity.TaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
		got := e.createPod(ctx, t, "apps", pod)
		want := map[string]string{
			"winner":                       "a",            // the Selector winner: priority tie broken by name
			"own":                          "mine",         // the pod's own value
			"k8s.aliyun.com/eci-use-specs": "ecs.c6.large", // the pod's own value over the ConfigMap's
			"owner":                        "cm-first",     // the first ConfigMap match over the second
			"second":                       "yes",          // the second ConfigMap match still adds
		}
		for k, v := range want {
			if got.Annotations[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
			}
		}
		if got.Labels["profiled"] != "mine" {
			t.Errorf("label profiled = %q: the pod's own label was overwritten", got.Labels["profiled"])
		}
		n := 0
		for _, tol := range got.Spec.Tolerations {
			if tol.Key == identity.TaintKey {
				n++
			}
		}
		if n != 1 || !targetsVirtual(got) {
			t.Errorf("tolerations %v nodeSelector %v: want the pod's one toleration and the virtual nodeSelector", got.Spec.Tolerations, got.Spec.NodeSelector)
		}
		if node := e.waitBound(ctx, t, "apps", "ordered").Spec.NodeName; node != virtualNode {
			t.Errorf("bound to %s", node)
		}
	})

	t.Run("normalNodePrefer fills the normal node first, then overflows to the virtual node", func(t *testing.T) {
		e.applySelector(ctx, t, "burst", map[string]any{"priority": 100, "policy": map[string]any{"normalNodePrefer": map[string]any{}},
			"objectLabels": map[string]any{"matchLabels": map[string]any{"app": "burst"}}})
		labels := map[string]string{"app": "burst"}
		waitFor(ctx, t, "Selector burst to be loaded", func(ctx context.Context) (bool, error) {
			p, err := e.dryRun(ctx, "prefer", newPod("probe", labels, ""))
			return err == nil && p.Spec.Affinity != nil && tolerates(p), err
		})
		// The normal node has 1 CPU: three pods of 300m fit, the rest not.
		for i := range 5 {
			name := fmt.Sprintf("burst-%d", i)
			e.createPod(ctx, t, "prefer", newPod(name, labels, "300m"))
			want := normalNode
			if i >= 3 {
				want = virtualNode
			}
			if got := e.waitBound(ctx, t, "prefer", name).Spec.NodeName; got != want {
				t.Errorf("%s bound to %s, want %s", name, got, want)
			}
		}
	})

	t.Run("normalNodeOnly keeps the pod off virtual nodes", func(t *testing.T) {
		e.applySelector(ctx, t, "stay", map[string]any{"priority": 100, "policy": map[string]any{"normalNodeOnly": map[string]any{}},
			"objectLabels": map[string]any{"matchLabels": map[string]any{"app": "stay"}}})
		labels := map[string]string{"app": "stay"}
		waitFor(ctx, t, "Selector stay to be loaded", func(ctx context.Context) (bool, error) {
			p, err := e.dryRun(ctx, "prefer", newPod("probe", labels, ""))
			return err == nil && p.Spec.Affinity != nil, err
		})
		got := e.createPod(ctx, t, "prefer", newPod("stay", labels, ""))
		if tolerates(got) || got.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
			t.Fatalf("spec %+v", got.Spec)
		}
		if n := e.waitBound(ctx, t, "prefer", "stay").Spec.NodeName; n != normalNode {
			t.Fatalf("bound to %s", n)
		}
	})

	t.Run("hot reload: a changed ConfigMap applies to the next pod; a broken one keeps the last good selectors", func(t *testing.T) {
		e.createNamespace(ctx, t, "apps2", map[string]string{"eci": "v2"})
		e.setConfigMap(ctx, t, map[string]string{"selectors": `[{"name": "eci-ns", "namespaceSelector": {"matchLabels": {"eci": "v2"}}}]`})
		plain := newPod("probe", map[string]string{"app": "x"}, "")
		waitFor(ctx, t, "the changed ConfigMap to apply", func(ctx context.Context) (bool, error) {
			p, err := e.dryRun(ctx, "apps2", plain)
			return err == nil && targetsVirtual(p), err
		})
		if p, err := e.dryRun(ctx, "apps", plain); err != nil || targetsVirtual(p) {
			t.Fatalf("namespace apps still selected after the change (err %v)", err)
		}
		e.createPod(ctx, t, "apps2", newPod("follows", map[string]string{"app": "x"}, ""))
		if n := e.waitBound(ctx, t, "apps2", "follows").Spec.NodeName; n != virtualNode {
			t.Fatalf("bound to %s", n)
		}

		e.setConfigMap(ctx, t, map[string]string{"selectors": `[{"name": "eci-ns", "namespaceSelector": {"matchLabels": {"eci": "v3"}}},`})
		ev := e.waitWarning(ctx, t, "kube-system", "ConfigMap", "eci-profile", "InvalidSelectors")
		t.Logf("event: %s", ev.Message)
		if got := e.createPod(ctx, t, "apps2", newPod("kept", map[string]string{"app": "x"}, "")); !targetsVirtual(got) {
			t.Fatalf("the broken ConfigMap dropped the previous selectors: %+v", got.Spec)
		}

		// A Selector using an unsupported policy is refused the same way.
		e.applySelector(ctx, t, "a-virtual", map[string]any{"objectLabels": map[string]any{"matchLabels": map[string]any{"sel": "yes"}}, "priority": 10,
			"policy": map[string]any{"namespaceResourceLimit": map[string]any{"namespace": "apps"}}})
		ev = e.waitWarning(ctx, t, "default", "Selector", "a-virtual", "InvalidSelectors")
		t.Logf("event: %s", ev.Message)
		if p, err := e.dryRun(ctx, "apps", newPod("probe", map[string]string{"sel": "yes"}, "")); err != nil || p.Annotations["winner"] != "a" {
			t.Fatalf("the refused Selector lost its previous version (err %v)", err)
		}
	})

	t.Run("metrics: matches by selector, no errors, port authenticated", func(t *testing.T) {
		mfs, err := hook.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				counts[mf.GetName()+labelString(m)] += m.GetCounter().GetValue()
			}
		}
		for _, k := range []string{`eci_profile_matches_total{form="configmap",selector="eci-ns"}`, `eci_profile_matches_total{form="selector",selector="a-virtual"}`, `eci_profile_matches_total{form="selector",selector="burst"}`} {
			if counts[k] == 0 {
				t.Errorf("%s is 0; have %v", k, counts)
			}
		}
		for k, v := range counts {
			if len(k) > len("eci_profile_errors_total") && k[:len("eci_profile_errors_total")] == "eci_profile_errors_total" && v > 0 {
				t.Errorf("%s = %v", k, v)
			}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test checks authentication, not the server's name
		resp, err := c.Get(hook.metrics)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("anonymous /metrics: %s", resp.Status)
		}
	})

	t.Run("the webhook port refuses callers without the API server's client certificate", func(t *testing.T) {
		mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
		body := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"CREATE","namespace":"apps","resource":{"version":"v1","resource":"pods"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`)
		call := func(pair *controlplane.CertPair) error {
			cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
			if pair != nil {
				cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{cert}
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			resp, err := c.Post(hook.url, "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%w: %s", errStatus, resp.Status)
			}
			return nil
		}
		// Even system:masters' certificate (the cluster CA) is no webhook caller.
		masters, err := e.cp.PKI.ClientCert("intruder", "intruder", "system:masters")
		if err != nil {
			t.Fatal(err)
		}
		apiserver, err := e.webhookClientCA.ClientCert("caller", "kube-apiserver")
		if err != nil {
			t.Fatal(err)
		}
		if err := call(nil); err == nil {
			t.Error("a caller without a client certificate was answered")
		}
		if err := call(masters); err == nil {
			t.Error("a caller with a cluster-CA certificate was answered")
		}
		if err := call(apiserver); err != nil {
			t.Errorf("the API server's kind of certificate was refused: %v", err)
		}
	})

	t.Run("webhook stopped: pods are admitted unchanged", func(t *testing.T) {
		hook.stop(t)
		got := e.createPod(ctx, t, "apps2", newPod("after", map[string]string{"app": "x"}, ""))
		if targetsVirtual(got) || got.Spec.NodeSelector != nil || len(got.Annotations) != 0 {
			t.Fatalf("pod changed with the webhook stopped: %+v", got.Spec)
		}
	})
}

func labelString(m *dto.Metric) string {
	s := "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
	}
	return s + "}"
}
