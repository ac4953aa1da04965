package vnodectl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/version"
)

// run runs the command tree with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// isolate points HOME, VNODE_CONFIG and KUBECONFIG into a temporary
// directory and returns the config path.
func isolate(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	path := filepath.Join(home, ".vnode", "config")
	t.Setenv("VNODE_CONFIG", path)
	for _, k := range []string{"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_REGION_ID"} {
		t.Setenv(k, "")
	}
	return path
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestConfigDefaultIsTheSeedsTemplateAndParses(t *testing.T) {
	isolate(t)
	out, err := run(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse([]byte(out), "default")
	if err != nil {
		t.Fatalf("the template does not parse: %v\n%s", err, out)
	}
	if f.Kind != "vnode" || f.CurrentContext != "default" || len(f.Contexts) != 1 {
		t.Fatalf("template: %+v", f)
	}
	for _, key := range []string{"region-id:", "access-key-id:", "access-key-secret:", "vswitch-id:", "security-group-id:", "kubeconfig: ~/.vnode/deploy/kubeconfig"} {
		if !strings.Contains(out, key) {
			t.Errorf("template lacks %q", key)
		}
	}
}

const twoContexts = `kind: vnode
contexts:
  - name: default
    region-id: cn-hangzhou
    access-key-id: AKID
    access-key-secret: TOPSECRET
    vswitch-id: vsw-abc
    security-group-id: sg-abc
    kubeconfig: ~/.vnode/deploy/kubeconfig
  - name: other
    region-id: cn-beijing
    access-key-id: AKID2
    access-key-secret: TOPSECRET2
    vswitch-id: vsw-def
    security-group-id: sg-def
    kubeconfig: ~/.vnode/deploy/kubeconfig
current-context: default
`

func TestConfigShowsTheCurrentContextMaskedAndSwitches(t *testing.T) {
	path := isolate(t)
	writeFile(t, path, twoContexts)
	out, err := run(t, "config")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "TOPSECRET") || !strings.Contains(out, "******") || !strings.Contains(out, "cn-hangzhou") || !strings.Contains(out, "valid") {
		t.Fatalf("vnode config printed:\n%s", out)
	}
	if out, err := run(t, "config", "set-context", "other", "--dry"); err != nil || !strings.Contains(out, "would set") {
		t.Fatalf("--dry: %v %s", err, out)
	}
	if f, _ := config.Load(path); f.CurrentContext != "default" {
		t.Fatal("--dry changed the file")
	}
	if _, err := run(t, "config", "set-context", "other"); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "config")
	if err != nil || !strings.Contains(out, "cn-beijing") || strings.Contains(out, "TOPSECRET2") {
		t.Fatalf("after set-context: %v\n%s", err, out)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("the config file is %v, want 0600", st.Mode().Perm())
	}
}

func TestConfigBadInput(t *testing.T) {
	path := isolate(t)
	if _, err := run(t, "config"); err == nil || !strings.Contains(err.Error(), "vnode config default >") {
		t.Fatalf("no file: %v", err)
	}
	writeFile(t, path, twoContexts)
	before, _ := os.ReadFile(path)
	if _, err := run(t, "config", "set-context", "nope"); err == nil || !strings.Contains(err.Error(), `context "nope" not found`) {
		t.Fatalf("unknown context: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused set-context changed the file")
	}
	writeFile(t, path, "kind: vnode\ncontexts: [\n")
	if _, err := run(t, "config"); err == nil || !strings.Contains(err.Error(), "parsing vnode config") {
		t.Fatalf("malformed: %v", err)
	}
	writeFile(t, path, strings.Replace(twoContexts, "sg-abc", "bad", 1))
	if _, err := run(t, "config"); err == nil || !strings.Contains(err.Error(), "security-group-id") {
		t.Fatalf("invalid context: %v", err)
	}
}

func TestKubernetesVersionRange(t *testing.T) {
	isolate(t)
	for _, v := range []string{"1.16", "v1.27.9", "1.99", "2.0", "banana"} {
		_, err := run(t, "config", "default", "--kubernetes-version", v)
		if err == nil || !strings.Contains(err.Error(), "1.28") {
			t.Errorf("--kubernetes-version %s: %v, want a refusal naming the supported range", v, err)
		}
	}
	for _, v := range []string{"1.28", "v1.35.4", "1.30"} {
		if _, err := run(t, "config", "default", "--kubernetes-version", v); err != nil {
			t.Errorf("--kubernetes-version %s: %v", v, err)
		}
	}
	out, err := run(t, "--version")
	if err != nil || !strings.Contains(out, "Kubernetes v1.") {
		t.Fatalf("--version: %v %q", err, out)
	}
}

func TestSetupRefusesBadFlagsBeforeTouchingAnything(t *testing.T) {
	isolate(t)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, ca, "not a certificate")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bootstrap", "--bootstrap-token-id", "eci12", "--bootstrap-token-secret", "eci1233333333333"}, "[a-z0-9]{6}"},
		{[]string{"--bootstrap", "--bootstrap-token-id", "ECI123", "--bootstrap-token-secret", "eci1233333333333"}, "[a-z0-9]{6}"},
		{[]string{"--bootstrap", "--bootstrap-token-id", "eci123", "--bootstrap-token-secret", "eci123"}, "[a-z0-9]{16}"},
		{[]string{"--bootstrap", "--bootstrap-token-id", "eci123", "--bootstrap-token-secret", "ECI1233333333333"}, "[a-z0-9]{16}"},
		{[]string{"--bootstrap-token-id", "eci123"}, "need --bootstrap"},
		{nil, "--cluster-ca-path " + ca + ": holds no PEM certificate"},
	} {
		args := append([]string{"cluster", "setup", "--apiserver-address", "https://127.0.0.1:1", "--cluster-ca-path", ca}, c.args...)
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(defaultDeployKubeconfig()); !os.IsNotExist(err) {
		t.Fatal("a refused setup wrote a kubeconfig")
	}
}

func TestValidateWithoutKubeconfigSaysTheSeedsMessage(t *testing.T) {
	isolate(t)
	_, err := run(t, "cluster", "validate")
	if err == nil || err.Error() != "kubeconfig can't be empty" {
		t.Fatalf("got %v", err)
	}
	writeFile(t, defaultDeployKubeconfig(), "  \n")
	if _, err := run(t, "cluster", "validate"); err == nil || err.Error() != "kubeconfig can't be empty" {
		t.Fatalf("empty file: %v", err)
	}
}

// The supported range ends at the Kubernetes vnode is built against.
func TestMaxKubernetesIsTheBuiltOne(t *testing.T) {
	v := version.Kubernetes()
	if v == "v1.0.0-unknown" {
		t.Skip("the test binary carries no module versions")
	}
	if !strings.HasPrefix(v, fmt.Sprintf("v1.%d.", maxKubernetesMinor)) {
		t.Fatalf("built against %s, but the supported range ends at 1.%d", v, maxKubernetesMinor)
	}
}
