// Package config reads and writes the vnode configuration file
// (~/.vnode/config by default), the format of Alibaba's VNodectl: a list of
// named contexts, each holding one virtual node's region, credentials,
// network placement and Kubernetes connection, and the current context.
// vnode-kubelet and the vnode CLI share it, so the same file serves the
// cloud and the local ECI emulator (through a context's endpoint).
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Kind is the only value the file's kind may take.
const Kind = "vnode"

// File is the whole configuration file.
type File struct {
	Kind           string    `json:"kind"`
	Contexts       []Context `json:"contexts"`
	CurrentContext string    `json:"current-context,omitempty"`
}

// Context is one virtual node's configuration. Key names are VNodectl's.
type Context struct {
	Name            string `json:"name"`
	VNodeName       string `json:"vnode-name,omitempty"`
	RegionID        string `json:"region-id"`
	AccessKeyID     string `json:"access-key-id,omitempty"`
	AccessKeySecret string `json:"access-key-secret,omitempty"`
	// VSwitchIDs accepts a YAML list or a comma-separated string.
	VSwitchIDs StringList `json:"vswitch-id"`
	// ZoneIDs are the vSwitches' zones, for the node's topology labels
	// (a vnode extension: the zone of a vSwitch is a VPC fact ECI does not
	// return before an instance exists).
	ZoneIDs         StringList `json:"zone-id,omitempty"`
	SecurityGroupID string     `json:"security-group-id"`
	ResourceGroupID string     `json:"resource-group-id,omitempty"`
	Kubeconfig      string     `json:"kubeconfig"`
	// Taints accepts "key=value:Effect" strings or {key, value, effect}.
	Taints []Taint           `json:"taints,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	// NetworkType is "" (the public endpoint) or "vpc".
	NetworkType string `json:"network-type,omitempty"`
	// Endpoint is the ECI API address, e.g. http://127.0.0.1:PORT for the
	// local emulator; empty means the region's public (or VPC) endpoint.
	Endpoint string `json:"endpoint,omitempty"`
	// VirtualNodeID is the ECI VirtualNode this context created, if any.
	VirtualNodeID string `json:"virtual-node-id,omitempty"`
	// Capacity is what the node advertises (cpu, memory, pods,
	// ephemeral-storage, nvidia.com/gpu); missing keys take defaults.
	Capacity map[string]string `json:"capacity,omitempty"`
	// AllowedPodAnnotations are the pod annotations that choose an
	// instance's RAM role, security group, vSwitch, resource group or EIP
	// which every pod on this node may set (a vnode extension; default
	// none: pods get the context's placement and no RAM role). A YAML list
	// or a comma-separated string of full keys, e.g.
	// k8s.aliyun.com/eci-ram-role-name.
	AllowedPodAnnotations StringList `json:"allowed-pod-annotations,omitempty"`
}

// Taint is a node taint in the file.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// UnmarshalJSON accepts either "key=value:Effect" or an object.
func (t *Taint) UnmarshalJSON(data []byte) error {
	var s string
	if err := yaml.Unmarshal(data, &s); err == nil {
		parsed, err := ParseTaint(s)
		if err != nil {
			return err
		}
		*t = parsed
		return nil
	}
	type plain Taint
	var p plain
	if err := yaml.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("taint must be \"key=value:Effect\" or {key, value, effect}: %w", err)
	}
	*t = Taint(p)
	return nil
}

// ParseTaint parses kubectl's "key[=value]:Effect" form.
func ParseTaint(s string) (Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	if !ok {
		return Taint{}, fmt.Errorf("taint %q has no effect (want key=value:Effect)", s)
	}
	key, value, _ := strings.Cut(kv, "=")
	return Taint{Key: key, Value: value, Effect: effect}, nil
}

// String renders the taint as key=value:Effect.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

// StringList is a list that may be written as a comma-separated string.
type StringList []string

// UnmarshalJSON accepts a list or a comma-separated string.
func (l *StringList) UnmarshalJSON(data []byte) error {
	var list []string
	if err := yaml.Unmarshal(data, &list); err == nil {
		*l = cleanList(list)
		return nil
	}
	var s string
	if err := yaml.Unmarshal(data, &s); err != nil {
		return errors.New("want a list or a comma-separated string")
	}
	*l = cleanList(strings.Split(s, ","))
	return nil
}

func cleanList(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// DefaultPath is ~/.vnode/config, or $VNODE_CONFIG when set.
func DefaultPath() (string, error) {
	if p := os.Getenv("VNODE_CONFIG"); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the home directory for ~/.vnode/config: %w", err)
	}
	return filepath.Join(home, ".vnode", "config"), nil
}

// Load reads and parses a configuration file. It does not validate contexts:
// Resolve does, for the one context in use.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading vnode config %s: %w", path, err)
	}
	return Parse(data, path)
}

// Parse parses configuration bytes; name is used in error messages.
func Parse(data []byte, name string) (*File, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("parsing vnode config %s: %w", name, err)
	}
	if f.Kind != Kind {
		return nil, fmt.Errorf("vnode config %s: kind is %q, want %q", name, f.Kind, Kind)
	}
	seen := map[string]bool{}
	for i, c := range f.Contexts {
		if c.Name == "" {
			return nil, fmt.Errorf("vnode config %s: contexts[%d].name is empty", name, i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("vnode config %s: context %q appears twice", name, c.Name)
		}
		seen[c.Name] = true
	}
	return &f, nil
}

// Save writes the file with mode 0600: it holds an AccessKey secret.
func (f *File) Save(path string) error {
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("encoding vnode config: %w", err)
	}
	return WriteSecretFile(path, data)
}

// WriteSecretFile writes a file that holds a secret (the config file, a
// node's kubeconfig): 0600, in a directory made 0700 if missing, replaced
// at once so a reader never sees half of it.
func WriteSecretFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}

// Context returns the named context, or the current one when name is "".
func (f *File) Context(name string) (*Context, error) {
	if name == "" {
		name = f.CurrentContext
	}
	if name == "" {
		if len(f.Contexts) == 1 {
			return &f.Contexts[0], nil
		}
		return nil, errors.New("current-context is not set and no context was named")
	}
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			return &f.Contexts[i], nil
		}
	}
	names := make([]string, 0, len(f.Contexts))
	for _, c := range f.Contexts {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("context %q not found (have: %s)", name, strings.Join(names, ", "))
}

var (
	vswitchRE       = regexp.MustCompile(`^vsw-[0-9a-z*]+$`)
	securityGroupRE = regexp.MustCompile(`^sg-[0-9a-z*]+$`)
	regionRE        = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)
)

// Validate checks that a context can run a virtual node and names the key
// that is wrong. Credentials may come from the environment instead
// (ApplyEnv), so call it after ApplyEnv.
func (c *Context) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.RegionID == "" {
		bad("region-id", "is required (e.g. cn-hangzhou)")
	} else if !regionRE.MatchString(c.RegionID) {
		bad("region-id", "%q is not a region id (e.g. cn-hangzhou)", c.RegionID)
	}
	if c.AccessKeyID == "" {
		bad("access-key-id", "is required (or set ALIBABA_CLOUD_ACCESS_KEY_ID)")
	}
	if c.AccessKeySecret == "" {
		bad("access-key-secret", "is required (or set ALIBABA_CLOUD_ACCESS_KEY_SECRET)")
	}
	if len(c.VSwitchIDs) == 0 {
		bad("vswitch-id", "at least one vSwitch is required")
	}
	if len(c.VSwitchIDs) > 10 {
		bad("vswitch-id", "at most 10 vSwitches, got %d", len(c.VSwitchIDs))
	}
	for _, v := range c.VSwitchIDs {
		if !vswitchRE.MatchString(v) {
			bad("vswitch-id", "%q is not a vSwitch id (vsw-...)", v)
		}
	}
	if c.SecurityGroupID == "" {
		bad("security-group-id", "is required")
	} else if !securityGroupRE.MatchString(c.SecurityGroupID) {
		bad("security-group-id", "%q is not a security group id (sg-...)", c.SecurityGroupID)
	}
	if c.Kubeconfig == "" {
		bad("kubeconfig", "is required (the path written by `vnode cluster setup`, default ~/.vnode/deploy/kubeconfig)")
	}
	if c.NetworkType != "" && c.NetworkType != "vpc" {
		bad("network-type", "%q: leave empty for the public endpoint or set vpc", c.NetworkType)
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		bad("endpoint", "%q must start with http:// or https://", c.Endpoint)
	}
	if c.VNodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(c.VNodeName) {
			bad("vnode-name", "%q: %s", c.VNodeName, msg)
		}
	}
	for i, t := range c.Taints {
		if msgs := validation.IsQualifiedName(t.Key); len(msgs) > 0 {
			bad(fmt.Sprintf("taints[%d]", i), "key %q: %s", t.Key, strings.Join(msgs, "; "))
		}
		switch corev1.TaintEffect(t.Effect) {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			bad(fmt.Sprintf("taints[%d]", i), "effect %q must be NoSchedule, PreferNoSchedule or NoExecute", t.Effect)
		}
	}
	for _, k := range c.AllowedPodAnnotations {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad("allowed-pod-annotations", "%q is not an annotation key: %s", k, strings.Join(msgs, "; "))
		}
	}
	if len(c.Tags) > 20 {
		bad("tags", "at most 20 tags, got %d", len(c.Tags))
	}
	if _, err := c.ResourceList(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("context %q is invalid:\n  %s", c.Name, strings.Join(errs, "\n  "))
	}
	return nil
}

// ApplyEnv fills credentials and region from Alibaba Cloud's standard
// environment variables where the file leaves them empty.
func (c *Context) ApplyEnv() {
	set := func(dst *string, env string) {
		if *dst == "" {
			*dst = os.Getenv(env)
		}
	}
	set(&c.AccessKeyID, "ALIBABA_CLOUD_ACCESS_KEY_ID")
	set(&c.AccessKeySecret, "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
	set(&c.RegionID, "ALIBABA_CLOUD_REGION_ID")
}

// KubeconfigPath expands a leading ~ in the kubeconfig path.
func (c *Context) KubeconfigPath() (string, error) {
	return expandHome(c.Kubeconfig)
}

func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expanding ~ in %s: %w", p, err)
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
}

// Default capacity of a virtual node: ECI's per-account quotas, not a
// machine, bound what it can run.
var defaultCapacity = map[corev1.ResourceName]string{
	corev1.ResourceCPU:              "1000",
	corev1.ResourceMemory:           "4Ti",
	corev1.ResourcePods:             "1000",
	corev1.ResourceEphemeralStorage: "30Ti",
}

// ResourceList returns the node capacity: the configured values, with
// defaults only for resources the file does not name.
func (c *Context) ResourceList() (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for name, v := range defaultCapacity {
		out[name] = resource.MustParse(v)
	}
	for k, v := range c.Capacity {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("capacity.%s: %q is not a quantity: %v", k, v, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("capacity.%s: %q is negative", k, v)
		}
		out[corev1.ResourceName(k)] = q
	}
	return out, nil
}

// Redacted returns a copy safe to print: the AccessKey secret is masked.
func (c Context) Redacted() Context {
	if c.AccessKeySecret != "" {
		c.AccessKeySecret = "******"
	}
	return c
}
