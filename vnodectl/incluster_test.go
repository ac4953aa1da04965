package vnodectl

import (
	"path/filepath"
	"strings"
	"testing"
)

// Bad input to `create --in-cluster` is refused with the rule named,
// before anything is printed or applied.
func TestCreateInClusterRefusesBadInput(t *testing.T) {
	path := isolate(t)
	writeFile(t, path, twoContexts)
	kubeconfig := filepath.Join(filepath.Dir(path), "deploy", "kubeconfig")
	writeFile(t, kubeconfig, bootstrapKubeconfig) // it carries no CA
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--image", "vnode:v1", "--dry"}, "--image needs --in-cluster"},
		{[]string{"create", "--in-cluster", "--client-token", "t", "--dry"}, "--client-token is CreateVirtualNode's"},
		{[]string{"create", "--in-cluster", "--name", strings.Repeat("n", 58), "--dry"}, "at most 57 characters"},
		{[]string{"create", "--in-cluster", "--dry"}, "carries no cluster CA"},
	} {
		out, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || out != "" {
			t.Errorf("vnode %s: %v, printed %q; want an error with %q and nothing printed", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}
