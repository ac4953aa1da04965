package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vnode-project/vnode/eciprofile/profile"
)

// maxReview bounds a request body: the API server caps objects at 3 MiB.
const maxReview = 4 << 20

// handler answers AdmissionReviews for pod creations. It always allows:
// an error admits the pod unchanged and is counted, never denies.
type handler struct {
	set        func() *profile.Set
	namespaces corelisters.NamespaceLister
	// getNamespace reads a namespace the cache has not seen yet (created
	// an instant before its first pod); nil: cache only.
	getNamespace func(ctx context.Context, name string) (*corev1.Namespace, error)
	excluded     map[string]bool
	m            *metrics
	log          logrus.FieldLogger
}

// errReason tags an error with its metrics reason.
type errReason struct {
	reason string
	err    error
}

func (e *errReason) Error() string { return e.err.Error() }
func (e *errReason) Unwrap() error { return e.err }

func fail(reason string, format string, args ...any) error {
	return &errReason{reason: reason, err: fmt.Errorf(format, args...)}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	result := resultUnchanged
	defer func() { h.m.latency.WithLabelValues(result).Observe(time.Since(start).Seconds()) }()

	var review admissionv1.AdmissionReview
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReview+1))
	if err == nil && len(body) > maxReview {
		err = errors.New("request body over 4 MiB")
	}
	if err == nil {
		err = json.Unmarshal(body, &review)
	}
	if err == nil && review.Request == nil {
		err = errors.New("AdmissionReview without a request")
	}
	if err != nil {
		// Without a request UID there is no answer to give; the API server
		// treats the failure per failurePolicy: Ignore.
		result = resultError
		h.m.errors.WithLabelValues("bad-request").Inc()
		h.log.WithError(err).Warn("unreadable admission request")
		http.Error(w, "reading the AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := review.Request
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	patch, err := h.safeMutate(r.Context(), req)
	switch {
	case err != nil:
		result = resultError
		reason := "internal"
		var er *errReason
		if errors.As(err, &er) {
			reason = er.reason
		}
		h.m.errors.WithLabelValues(reason).Inc()
		h.log.WithError(err).WithFields(logrus.Fields{"namespace": req.Namespace, "name": req.Name, "uid": req.UID, "reason": reason}).
			Warn("admitting the pod unchanged after an error")
		resp.Warnings = []string{"eci-profile: pod admitted unchanged: " + err.Error()}
	case patch != nil:
		result = resultMutated
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	out := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: resp}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		h.log.WithError(err).Warn("writing the admission response")
	}
}

// safeMutate turns a panic into an error: a bug admits the pod unchanged.
func (h *handler) safeMutate(ctx context.Context, req *admissionv1.AdmissionRequest) (patch []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			patch, err = nil, fail("panic", "panic while mutating: %v", p)
		}
	}()
	return h.mutate(ctx, req)
}

func (h *handler) mutate(ctx context.Context, req *admissionv1.AdmissionRequest) ([]byte, error) {
	if req.Operation != admissionv1.Create || req.Resource.Group != "" || req.Resource.Resource != "pods" || req.SubResource != "" {
		return nil, nil
	}
	if h.excluded[req.Namespace] {
		return nil, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return nil, fail("decode", "decoding the pod: %w", err)
	}
	set := h.set()
	if set == nil {
		return nil, fail("not-loaded", "no selectors loaded yet")
	}
	ns, err := h.namespaces.Get(req.Namespace)
	if apierrors.IsNotFound(err) && h.getNamespace != nil {
		ns, err = h.getNamespace(ctx, req.Namespace)
	}
	if err != nil {
		return nil, fail("namespace", "reading namespace %q: %w", req.Namespace, err)
	}
	d := set.Decide(ns.Labels, &pod)
	if len(d.Matches) == 0 && d.Defaults == nil {
		return nil, nil
	}
	mutated := pod.DeepCopy()
	if !d.Apply(mutated) {
		return nil, nil
	}
	patch, err := profile.Patch(&pod, mutated)
	if err != nil {
		return nil, fail("patch", "%w", err)
	}
	names := make([]string, 0, len(d.Matches))
	for _, m := range d.Matches {
		h.m.matches.WithLabelValues(m.Form, m.Rule.Name).Inc()
		names = append(names, m.Form+"/"+m.Rule.Name)
	}
	h.log.WithFields(logrus.Fields{"namespace": req.Namespace, "pod": pod.Name, "generateName": pod.GenerateName,
		"policy": d.Policy, "matches": names}).Debug("pod mutated")
	return patch, nil
}
