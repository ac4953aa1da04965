package vnodectl

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// An add-on run outside the cluster behind https (edge-tunnel-server's
// health endpoint) answers only when its CA is given: never unverified.
func TestHealthCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	ctx := context.Background()
	if healthy(ctx, http.DefaultClient, srv.URL) {
		t.Fatal("a certificate the system does not trust was accepted")
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := healthClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if !healthy(ctx, probe, srv.URL) {
		t.Fatal("the endpoint is not healthy with its CA given")
	}
	if _, err := healthClient(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing --health-ca was accepted")
	}
}
