package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vnode-project/vnode/eciprofile/profile"
)

func testHandler(t testing.TB, set func() *profile.Set) *handler {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{"eci": "true"}}}); err != nil {
		t.Fatal(err)
	}
	m := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, func() float64 { return 0 })
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	// The API has one namespace the cache has not seen yet.
	get := func(_ context.Context, name string) (*corev1.Namespace, error) {
		if name == "fresh" {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"eci": "true"}}}, nil
		}
		return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
	}
	return &handler{set: set, namespaces: corelisters.NewNamespaceLister(idx), getNamespace: get, m: m, log: log,
		excluded: map[string]bool{"kube-system": true}}
}

func review(ns string, raw []byte) []byte {
	b, _ := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u1", Operation: admissionv1.Create, Namespace: ns,
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Object: runtime.RawExtension{Raw: raw}}})
	return b
}

func post(t *testing.T, h http.Handler, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return rec.Code, out.Response
}

// TestErrorsAdmitUnchanged: every failure answers allowed with no patch
// and is counted; Alibaba's version answered allowed=false, which denies
// the pod whatever the failurePolicy.
func TestErrorsAdmitUnchanged(t *testing.T) {
	p, err := profile.ParseConfigMap(map[string]string{"selectors": `[{"name":"ns","namespaceSelector":{"matchLabels":{"eci":"true"}}}]`})
	if err != nil {
		t.Fatal(err)
	}
	good := func() *profile.Set { return profile.NewSet(nil, p) }
	pod := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`)
	for _, tc := range []struct {
		name   string
		set    func() *profile.Set
		ns     string
		raw    []byte
		reason string // "" = no error
		patch  bool
	}{
		{name: "mutated", set: good, ns: "apps", raw: pod, patch: true},
		{name: "namespace not cached yet", set: good, ns: "fresh", raw: pod, patch: true},
		{name: "excluded namespace", set: good, ns: "kube-system", raw: pod},
		{name: "undecodable pod", set: good, ns: "apps", raw: []byte(`{"spec":5}`), reason: "decode"},
		{name: "namespace nowhere", set: good, ns: "gone", raw: pod, reason: "namespace"},
		{name: "not loaded", set: func() *profile.Set { return nil }, ns: "apps", raw: pod, reason: "not-loaded"},
		{name: "panic", set: func() *profile.Set { panic("boom") }, ns: "apps", raw: pod, reason: "panic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHandler(t, tc.set)
			code, resp := post(t, h, review(tc.ns, tc.raw))
			if code != http.StatusOK || resp == nil || !resp.Allowed || resp.UID != "u1" {
				t.Fatalf("status %d response %+v: want allowed", code, resp)
			}
			if (resp.Patch != nil) != tc.patch {
				t.Fatalf("patch %s, want patch: %v", resp.Patch, tc.patch)
			}
			if tc.reason != "" {
				if got := testutil.ToFloat64(h.m.errors.WithLabelValues(tc.reason)); got != 1 {
					t.Fatalf("errors{reason=%q} = %v, want 1", tc.reason, got)
				}
			} else if n := testutil.CollectAndCount(h.m.errors); n != 0 {
				t.Fatalf("%d error series on success", n)
			}
		})
	}
	h := testHandler(t, good)
	if code, _ := post(t, h, []byte("not json")); code != http.StatusBadRequest || testutil.ToFloat64(h.m.errors.WithLabelValues("bad-request")) != 1 {
		t.Fatalf("garbage: status %d", code)
	}
}

// BenchmarkHandler is the handler's own cost for a matched pod (decode,
// match, mutate, patch, encode), without TLS or the API server.
func BenchmarkHandler(b *testing.B) {
	p, err := profile.ParseConfigMap(map[string]string{"vSwitchIds": "vsw-1",
		"selectors": `[{"name":"ns","namespaceSelector":{"matchLabels":{"eci":"true"}},"effect":{"annotations":{"k8s.aliyun.com/eci-use-specs":"2-4Gi"}}}]`})
	if err != nil {
		b.Fatal(err)
	}
	var rules []profile.Rule
	for i := range 5 {
		s := &profile.Selector{ObjectMeta: metav1.ObjectMeta{Name: "s" + string(rune('a'+i))},
			Spec: profile.SelectorSpec{ObjectLabels: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "bench"}}}}
		r, err := profile.ParseSelector(s)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, r)
	}
	set := profile.NewSet(rules, p)
	h := testHandler(b, func() *profile.Set { return set })
	body := review("apps", []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"bench"}},"spec":{"containers":[{"name":"c","image":"i","resources":{"requests":{"cpu":"100m"}}}]}}`))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
