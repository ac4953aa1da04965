package translate

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/vnode-project/vnode/eci/model"
)

// TokenRequest is a service-account token a pod's projected volumes need:
// translation names them (TokenRequests) and the caller mints them, so
// translating a pod calls out to nothing.
type TokenRequest struct {
	Audience          string
	ExpirationSeconds int64
}

// Token is a minted service-account token and when it expires.
type Token struct {
	Value  string
	Expiry time.Time
}

// Tokens are the minted tokens of a pod, by request.
type Tokens map[TokenRequest]Token

// TokenRequests lists, once each, the tokens the pod's projected volumes
// need.
func TokenRequests(pod *corev1.Pod) []TokenRequest {
	var out []TokenRequest
	seen := map[TokenRequest]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken == nil {
				continue
			}
			r := tokenRequest(src.ServiceAccountToken)
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return out
}

func tokenRequest(sat *corev1.ServiceAccountTokenProjection) TokenRequest {
	r := TokenRequest{Audience: sat.Audience, ExpirationSeconds: DefaultTokenExpiration}
	if sat.ExpirationSeconds != nil {
		r.ExpirationSeconds = *sat.ExpirationSeconds
	}
	return r
}

// VolumeFiles returns the files of a configMap, secret, downwardAPI or
// projected volume, and the earliest expiry of a service-account token in
// it (zero when none), so the caller can refresh the token before then.
func VolumeFiles(pod *corev1.Pod, v *corev1.Volume, objs Objects, tokens Tokens) ([]model.File, time.Time, error) {
	// A plain configMap, secret or downwardAPI volume is a projected
	// volume of one source.
	var sources []corev1.VolumeProjection
	switch {
	case v.ConfigMap != nil:
		sources = []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.ConfigMap.Name}, Items: v.ConfigMap.Items, Optional: v.ConfigMap.Optional}}}
	case v.Secret != nil:
		sources = []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items, Optional: v.Secret.Optional}}}
	case v.DownwardAPI != nil:
		sources = []corev1.VolumeProjection{{DownwardAPI: &corev1.DownwardAPIProjection{Items: v.DownwardAPI.Items}}}
	case v.Projected != nil:
		sources = v.Projected.Sources
	default:
		return nil, time.Time{}, fmt.Errorf("volume %s is not a configuration volume", v.Name)
	}
	files, expiry, err := projectedFiles(pod, v.Name, sources, tokens, objs)
	if err != nil {
		return nil, time.Time{}, err
	}
	for _, f := range files {
		if err := checkPath(v.Name, f.Path); err != nil {
			return nil, time.Time{}, err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, expiry, nil
}

// DefaultMode returns the mode files of a configuration volume get.
func DefaultMode(v *corev1.Volume) int32 {
	switch {
	case v.ConfigMap != nil && v.ConfigMap.DefaultMode != nil:
		return *v.ConfigMap.DefaultMode
	case v.Secret != nil && v.Secret.DefaultMode != nil:
		return *v.Secret.DefaultMode
	case v.DownwardAPI != nil && v.DownwardAPI.DefaultMode != nil:
		return *v.DownwardAPI.DefaultMode
	case v.Projected != nil && v.Projected.DefaultMode != nil:
		return *v.Projected.DefaultMode
	}
	return corev1.ConfigMapVolumeSourceDefaultMode
}

func configMapFiles(pod *corev1.Pod, vol, name string, items []corev1.KeyToPath, opt *bool, objs Objects) ([]model.File, error) {
	cm, err := objs.ConfigMap(pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("volume %s: %w", vol, missing("configmap", pod.Namespace, name, err))
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return pick(vol, "configmap "+pod.Namespace+"/"+name, data, items, opt)
}

func secretFiles(pod *corev1.Pod, vol, name string, items []corev1.KeyToPath, opt *bool, objs Objects) ([]model.File, error) {
	s, err := objs.Secret(pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("volume %s: %w", vol, missing("secret", pod.Namespace, name, err))
	}
	return pick(vol, "secret "+pod.Namespace+"/"+name, s.Data, items, opt)
}

// pick applies items (key -> path, mode) the way the kubelet's atomic
// writer does: without items every key becomes a file named after it.
func pick(vol, what string, data map[string][]byte, items []corev1.KeyToPath, opt *bool) ([]model.File, error) {
	if len(items) == 0 {
		out := make([]model.File, 0, len(data))
		for k, v := range data {
			out = append(out, model.File{Path: k, Content: v})
		}
		return out, nil
	}
	out := make([]model.File, 0, len(items))
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional(opt) {
				continue
			}
			return nil, unsupported("MissingVolumeKey", "volume %s: %s has no key %q; add it or mark the volume optional", vol, what, it.Key)
		}
		f := model.File{Path: it.Path, Content: v}
		if it.Mode != nil {
			f.Mode = *it.Mode
		}
		out = append(out, f)
	}
	return out, nil
}

func downwardFiles(pod *corev1.Pod, vol string, items []corev1.DownwardAPIVolumeFile) ([]model.File, error) {
	out := make([]model.File, 0, len(items))
	for _, it := range items {
		var value string
		switch {
		case it.FieldRef != nil:
			v, known, err := FieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", vol, err)
			}
			if !known {
				// The kubelet itself refuses these in volumes.
				return nil, unsupported("UnsupportedFieldPath", "volume %s: field %s is only available as an environment variable", vol, it.FieldRef.FieldPath)
			}
			value = v
		case it.ResourceFieldRef != nil:
			c := firstContainer(pod)
			v, err := resourceFieldRef(pod, c, it.ResourceFieldRef)
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", vol, err)
			}
			value = v
		default:
			return nil, unsupported("UnsupportedDownwardAPI", "volume %s: item %s names no field", vol, it.Path)
		}
		f := model.File{Path: it.Path, Content: []byte(value)}
		if it.Mode != nil {
			f.Mode = *it.Mode
		}
		out = append(out, f)
	}
	return out, nil
}

func firstContainer(pod *corev1.Pod) *corev1.Container {
	if len(pod.Spec.Containers) > 0 {
		return &pod.Spec.Containers[0]
	}
	return &corev1.Container{}
}

// DefaultTokenExpiration is what the kubelet asks for when a projection
// names none (1 h); the API server may extend it.
const DefaultTokenExpiration = int64(3600)

func projectedFiles(pod *corev1.Pod, vol string, sources []corev1.VolumeProjection, tokens Tokens, objs Objects) ([]model.File, time.Time, error) {
	var (
		out    []model.File
		expiry time.Time
	)
	for i, src := range sources {
		var (
			files []model.File
			err   error
		)
		switch {
		case src.ConfigMap != nil:
			files, err = configMapFiles(pod, vol, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, objs)
		case src.Secret != nil:
			files, err = secretFiles(pod, vol, src.Secret.Name, src.Secret.Items, src.Secret.Optional, objs)
		case src.DownwardAPI != nil:
			files, err = downwardFiles(pod, vol, src.DownwardAPI.Items)
		case src.ServiceAccountToken != nil:
			sat := src.ServiceAccountToken
			tok, ok := tokens[tokenRequest(sat)]
			if !ok {
				return nil, time.Time{}, fmt.Errorf("volume %s: no service-account token was minted for audience %q", vol, sat.Audience)
			}
			exp2 := tok.Expiry
			files = []model.File{{Path: sat.Path, Content: []byte(tok.Value)}}
			if expiry.IsZero() || exp2.Before(expiry) {
				expiry = exp2
			}
		case src.ClusterTrustBundle != nil:
			return nil, time.Time{}, unsupported("UnsupportedVolume", "volume %s: clusterTrustBundle projections are not supported on ECI; mount the bundle from a configMap instead", vol)
		case src.PodCertificate != nil:
			return nil, time.Time{}, unsupported("UnsupportedVolume", "volume %s: podCertificate projections are not supported on ECI", vol)
		default:
			return nil, time.Time{}, unsupported("UnsupportedVolume", "volume %s: projected source %d names no source", vol, i)
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		out = append(out, files...)
	}
	return out, expiry, nil
}

// checkPath refuses absolute paths and .. components, as the API server
// does for items; data keys without items are checked here too.
func checkPath(vol, p string) error {
	if p == "" || path.IsAbs(p) || strings.HasPrefix(path.Clean(p), "..") {
		return unsupported("InvalidVolumePath", "volume %s: file path %q must be relative and stay inside the volume", vol, p)
	}
	return nil
}
