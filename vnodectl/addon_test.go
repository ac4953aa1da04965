package vnodectl

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestAddonManifestsAreEmbeddedAndTakeTheImage(t *testing.T) {
	for _, ad := range addons {
		objs, err := ad.objects("example.com/x:1")
		if ad.dir == "eci-profile" && err != nil {
			if !strings.Contains(err.Error(), "not available in this build") {
				t.Errorf("eci-profile without manifests: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", ad.name, err)
		}
		found := false
		for _, u := range objs {
			if u.GetKind() == "Deployment" && u.GetName() == ad.deployment && u.GetNamespace() == ad.namespace {
				found = true
			}
			cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				if img := c.(map[string]any)["image"]; img != "example.com/x:1" {
					t.Errorf("%s: %s runs %v, want --image", ad.name, describe(u), img)
				}
			}
		}
		if !found {
			t.Errorf("%s: no Deployment %s/%s in manifests/%s", ad.name, ad.namespace, ad.deployment, ad.dir)
		}
	}
	if _, err := findAddon("nope"); err == nil || !strings.Contains(err.Error(), "vnode-approver") {
		t.Fatalf("unknown add-on: %v", err)
	}
}
