package vnodectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/vnode-project/vnode/manifests"
)

// fieldManager owns, in server-side apply, every field vnode sets: a
// re-run updates the same objects and never duplicates them.
const fieldManager = "vnode"

// partOfLabel marks what vnode creates beyond the manifests (tokens,
// ServiceAccounts), so that `cluster clean` finds it.
const (
	partOfLabel = "app.kubernetes.io/part-of"
	partOfValue = "vnode"
)

// manifestDir reads one embedded folder in its kustomization.yaml order.
func manifestDir(dir string) ([]*unstructured.Unstructured, error) {
	return readManifests(manifests.FS, dir)
}

func readManifests(fsys fs.FS, dir string) ([]*unstructured.Unstructured, error) {
	kdata, err := fs.ReadFile(fsys, path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("manifests/%s is not in this build: %w", dir, err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(kdata, &k); err != nil {
		return nil, fmt.Errorf("manifests/%s/kustomization.yaml: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		data, err := fs.ReadFile(fsys, path.Join(dir, r))
		if err != nil {
			return nil, fmt.Errorf("manifests/%s: %w", dir, err)
		}
		objs, err := decodeObjects(data)
		if err != nil {
			return nil, fmt.Errorf("manifests/%s/%s: %w", dir, r, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// decodeObjects splits a multi-document YAML stream into objects.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("an object without apiVersion, kind or name: %v", m)
		}
		out = append(out, u)
	}
}

// toUnstructured converts a typed object (with TypeMeta set).
func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return u, nil
}

func describe(u *unstructured.Unstructured) string {
	name := u.GetName()
	if ns := u.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return u.GetKind() + " " + name
}

// applier applies and deletes objects by server-side apply.
type applier struct {
	dynamic dynamic.Interface
	mapper  meta.RESTMapper
	dry     bool
	out     io.Writer
	removed map[string]bool // what remove already deleted, by describe()
}

func (a *admin) applier(g *globals) *applier {
	var mapper meta.RESTMapper
	if a != nil {
		mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(a.client.Discovery()))
		return &applier{dynamic: a.dynamic, mapper: mapper, dry: g.dry, out: g.out}
	}
	return &applier{dry: g.dry, out: g.out}
}

func (ap *applier) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := ap.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("the cluster does not serve %s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return ap.dynamic.Resource(m.Resource).Namespace(u.GetNamespace()), nil
	}
	return ap.dynamic.Resource(m.Resource), nil
}

// apply creates or updates each object; with --dry it prints them instead.
func (ap *applier) apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	if ap.dry {
		for _, u := range objs {
			data, err := yaml.Marshal(u.Object)
			if err != nil {
				return fmt.Errorf("encoding %s: %w", describe(u), err)
			}
			fmt.Fprintf(ap.out, "---\n# would apply %s\n%s", describe(u), data)
		}
		return nil
	}
	for _, u := range objs {
		ri, err := ap.resource(u)
		if err != nil {
			return err
		}
		data, err := u.MarshalJSON()
		if err != nil {
			return fmt.Errorf("encoding %s: %w", describe(u), err)
		}
		_, err = ri.Get(ctx, u.GetName(), metav1.GetOptions{})
		verb := "configured"
		if apierrors.IsNotFound(err) {
			verb = "created"
		}
		force := true
		if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
			return fmt.Errorf("applying %s: %w", describe(u), err)
		}
		fmt.Fprintf(ap.out, "%s %s\n", describe(u), verb)
	}
	return nil
}

// remove deletes each object in reverse order, ignoring those already gone.
func (ap *applier) remove(ctx context.Context, objs []*unstructured.Unstructured) error {
	for i := len(objs) - 1; i >= 0; i-- {
		u := objs[i]
		if ap.removed[describe(u)] {
			continue
		}
		if ap.removed == nil {
			ap.removed = map[string]bool{}
		}
		ap.removed[describe(u)] = true
		if ap.dry {
			fmt.Fprintf(ap.out, "would delete %s\n", describe(u))
			continue
		}
		ri, err := ap.resource(u)
		if err != nil {
			if meta.IsNoMatchError(errors.Unwrap(err)) {
				continue
			}
			return err
		}
		policy := metav1.DeletePropagationBackground
		err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("deleting %s: %w", describe(u), err)
		default:
			fmt.Fprintf(ap.out, "%s deleted\n", describe(u))
		}
	}
	return nil
}
