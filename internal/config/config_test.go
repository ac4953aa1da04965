package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The example from Alibaba's VNodectl documentation.
const seedExample = `kind: vnode
contexts:
  - name: default
    region-id: cn-guangzhou
    access-key-id: <yourAccessKeyID>
    access-key-secret: <yourAccessKeySecret>
    vswitch-id: vsw-7xv2yk45qp5etidgf****
    security-group-id: sg-7xv5tcch4kjdr65t****
    kubeconfig: ~/.vnode/deploy/kubeconfig
current-context: default
`

func TestSeedExample(t *testing.T) {
	f, err := Parse([]byte(seedExample), "seed")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Context("")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RegionID != "cn-guangzhou" || len(c.VSwitchIDs) != 1 || c.VSwitchIDs[0] != "vsw-7xv2yk45qp5etidgf****" {
		t.Fatalf("parsed %+v", c)
	}
	home, _ := os.UserHomeDir()
	if p, _ := c.KubeconfigPath(); p != filepath.Join(home, ".vnode/deploy/kubeconfig") {
		t.Fatalf("kubeconfig path %s", p)
	}
}

func TestFullContext(t *testing.T) {
	f, err := Parse([]byte(`kind: vnode
contexts:
- name: a
  vnode-name: cn-hangzhou.vnd-1
  region-id: cn-hangzhou
  access-key-id: id
  access-key-secret: secret
  vswitch-id: [vsw-a, vsw-b]
  security-group-id: sg-1
  resource-group-id: rg-1
  kubeconfig: /k
  taints: ["dedicated=eci:NoSchedule", {key: team, value: x, effect: NoExecute}]
  tags: {team: blue}
  network-type: vpc
  endpoint: http://127.0.0.1:8080
  capacity: {cpu: "64", nvidia.com/gpu: "4"}
  allowed-pod-annotations: [k8s.aliyun.com/eci-ram-role-name, k8s.aliyun.com/eci-with-eip]
- name: b
  region-id: cn-beijing
  access-key-id: id
  access-key-secret: secret
  vswitch-id: "vsw-1, vsw-2,vsw-3"
  security-group-id: sg-2
  kubeconfig: /k
current-context: a
`), "full")
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.Context("")
	if err != nil || a.Name != "a" {
		t.Fatalf("current context: %v %v", a, err)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := a.Taints[0].String() + " " + a.Taints[1].String(); got != "dedicated=eci:NoSchedule team=x:NoExecute" {
		t.Errorf("taints %s", got)
	}
	rl, err := a.ResourceList()
	if err != nil {
		t.Fatal(err)
	}
	// Configured values win; defaults fill only what is missing.
	if q := rl[corev1.ResourceCPU]; q.Cmp(resource.MustParse("64")) != 0 {
		t.Errorf("cpu %s, want the configured 64", q.String())
	}
	if q := rl["nvidia.com/gpu"]; q.Cmp(resource.MustParse("4")) != 0 {
		t.Errorf("gpu %s", q.String())
	}
	if q := rl[corev1.ResourcePods]; q.Cmp(resource.MustParse("1000")) != 0 {
		t.Errorf("pods default %s", q.String())
	}
	if strings.Join(a.AllowedPodAnnotations, "|") != "k8s.aliyun.com/eci-ram-role-name|k8s.aliyun.com/eci-with-eip" {
		t.Errorf("allowed-pod-annotations %q", a.AllowedPodAnnotations)
	}
	b, err := f.Context("b")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.AllowedPodAnnotations) != 0 {
		t.Errorf("allowed-pod-annotations default %q, want none", b.AllowedPodAnnotations)
	}
	if strings.Join(b.VSwitchIDs, "|") != "vsw-1|vsw-2|vsw-3" {
		t.Errorf("comma-separated vswitches parsed as %q", b.VSwitchIDs)
	}
	if _, err := f.Context("nope"); err == nil || !strings.Contains(err.Error(), "have: a, b") {
		t.Errorf("unknown context: %v", err)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	base := func() Context {
		return Context{Name: "c", RegionID: "cn-hangzhou", AccessKeyID: "id", AccessKeySecret: "s",
			VSwitchIDs: []string{"vsw-1"}, SecurityGroupID: "sg-1", Kubeconfig: "/k"}
	}
	cases := []struct {
		name   string
		mutate func(*Context)
		key    string
	}{
		{"no region", func(c *Context) { c.RegionID = "" }, "region-id"},
		{"bad region", func(c *Context) { c.RegionID = "Hangzhou" }, "region-id"},
		{"no access key", func(c *Context) { c.AccessKeyID = "" }, "access-key-id"},
		{"no secret", func(c *Context) { c.AccessKeySecret = "" }, "access-key-secret"},
		{"no vswitch", func(c *Context) { c.VSwitchIDs = nil }, "vswitch-id"},
		{"bad vswitch", func(c *Context) { c.VSwitchIDs = []string{"subnet-1"} }, "vswitch-id"},
		{"no security group", func(c *Context) { c.SecurityGroupID = "" }, "security-group-id"},
		{"no kubeconfig", func(c *Context) { c.Kubeconfig = "" }, "kubeconfig"},
		{"bad network type", func(c *Context) { c.NetworkType = "classic" }, "network-type"},
		{"bad endpoint", func(c *Context) { c.Endpoint = "127.0.0.1:80" }, "endpoint"},
		{"bad node name", func(c *Context) { c.VNodeName = "Bad_Name" }, "vnode-name"},
		{"bad taint effect", func(c *Context) { c.Taints = []Taint{{Key: "k", Effect: "Sometimes"}} }, "taints[0]"},
		{"bad capacity", func(c *Context) { c.Capacity = map[string]string{"cpu": "lots"} }, "capacity.cpu"},
		{"bad allowed annotation", func(c *Context) { c.AllowedPodAnnotations = []string{"k8s.aliyun.com/ram role"} }, "allowed-pod-annotations"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			if err := c.Validate(); err != nil {
				t.Fatalf("base context invalid: %v", err)
			}
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key+":") {
				t.Fatalf("want an error naming %s, got %v", tc.key, err)
			}
			if strings.Contains(err.Error(), "\"s\"") {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for name, body := range map[string]string{
		"wrong kind":      "kind: other\ncontexts: []\n",
		"unknown key":     "kind: vnode\ncontexts:\n- name: a\n  regoin-id: x\n",
		"duplicate":       "kind: vnode\ncontexts:\n- name: a\n- name: a\n",
		"unnamed":         "kind: vnode\ncontexts:\n- region-id: x\n",
		"taint no effect": "kind: vnode\ncontexts:\n- name: a\n  taints: [\"k=v\"]\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(body), "x"); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	_, err := Parse([]byte("kind: vnode\ncontexts:\n- name: a\n  regoin-id: x\n"), "x")
	if !strings.Contains(err.Error(), "regoin-id") {
		t.Errorf("unknown key not named: %v", err)
	}
}

func TestEnvAndSave(t *testing.T) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "env-id")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret")
	c := Context{Name: "c", AccessKeyID: "file-id"}
	c.ApplyEnv()
	if c.AccessKeyID != "file-id" || c.AccessKeySecret != "env-secret" {
		t.Fatalf("env applied as %+v", c.Redacted())
	}
	if c.Redacted().AccessKeySecret == "env-secret" {
		t.Fatal("Redacted shows the secret")
	}
	path := filepath.Join(t.TempDir(), "sub", "config")
	f := &File{Kind: Kind, Contexts: []Context{c}, CurrentContext: "c"}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved with mode %v (%v)", fi.Mode().Perm(), err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Contexts[0].AccessKeySecret != "env-secret" {
		t.Fatal("round trip lost the secret")
	}
}
