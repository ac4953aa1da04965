package profile

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch is the JSON patch from orig to mutated, covering only the fields
// Apply touches. Each is written whole with "add", which also replaces an
// existing member; the values in mutated still hold the pod's own entries.
func Patch(orig, mutated *corev1.Pod) ([]byte, error) {
	var ops []patchOp
	add := func(path string, a, b, value any) {
		if !equality.Semantic.DeepEqual(a, b) {
			ops = append(ops, patchOp{Op: "add", Path: path, Value: value})
		}
	}
	add("/metadata/labels", orig.Labels, mutated.Labels, mutated.Labels)
	add("/metadata/annotations", orig.Annotations, mutated.Annotations, mutated.Annotations)
	add("/spec/nodeSelector", orig.Spec.NodeSelector, mutated.Spec.NodeSelector, mutated.Spec.NodeSelector)
	add("/spec/tolerations", orig.Spec.Tolerations, mutated.Spec.Tolerations, mutated.Spec.Tolerations)
	add("/spec/affinity", orig.Spec.Affinity, mutated.Spec.Affinity, mutated.Spec.Affinity)
	if len(ops) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding the JSON patch: %w", err)
	}
	return b, nil
}
