package emulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vnode-project/vnode/eci/model"
)

// group is one container group, in the shape DescribeContainerGroups
// returns (JSON field names are ECI's).
type group struct {
	ContainerGroupID   string       `json:"ContainerGroupId"`
	ContainerGroupName string       `json:"ContainerGroupName"`
	HostName           string       `json:"HostName,omitempty"`
	RegionID           string       `json:"RegionId"`
	ZoneID             string       `json:"ZoneId"`
	Cpu                float64      `json:"Cpu"`
	Memory             float64      `json:"Memory"`
	InstanceType       string       `json:"InstanceType,omitempty"`
	VSwitchID          string       `json:"VSwitchId"`
	SecurityGroupID    string       `json:"SecurityGroupId"`
	ResourceGroupID    string       `json:"ResourceGroupId,omitempty"`
	RestartPolicy      string       `json:"RestartPolicy"`
	IntranetIP         string       `json:"IntranetIp"`
	Status             string       `json:"Status"`
	CreationTime       string       `json:"CreationTime"`
	SucceededTime      string       `json:"SucceededTime,omitempty"`
	FailedTime         string       `json:"FailedTime,omitempty"`
	ExpiredTime        string       `json:"ExpiredTime,omitempty"`
	SpotStrategy       string       `json:"SpotStrategy,omitempty"`
	Tags               []tag        `json:"Tags"`
	Events             []event      `json:"Events"`
	Containers         []*container `json:"Containers"`
	InitContainers     []*container `json:"InitContainers"`
	Volumes            []volume     `json:"Volumes"`
	DNSConfig          *dnsConfig   `json:"DnsConfig,omitempty"`

	clientToken string
	created     time.Time
	credentials []registryCredential // never returned, as ECI never returns them
	pending     *groupUpdate         // an accepted UpdateContainerGroup not yet applied
	// changed is when the group last changed (status, a container's state,
	// an event): DescribeContainerGroupStatus' SinceSecond filters on it.
	changed time.Time
}

// hostName is the instance's hostname: HostName, else its name.
func (g *group) hostName() string {
	if g.HostName != "" {
		return g.HostName
	}
	return g.ContainerGroupName
}

// dnsConfig is a group's DnsConfig, in DescribeContainerGroups' shape.
type dnsConfig struct {
	NameServers []string    `json:"NameServers"`
	Searches    []string    `json:"Searches"`
	Options     []dnsOption `json:"Options"`
}

type dnsOption struct {
	Name  string `json:"Name"`
	Value string `json:"Value"`
}

// registryCredential is an ImageRegistryCredential.N of a request.
type registryCredential struct {
	Server   string `json:"Server"`
	UserName string `json:"UserName"`
	Password string `json:"Password"`
}

type tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type event struct {
	Count          int    `json:"Count"`
	Type           string `json:"Type"`
	Name           string `json:"Name"`
	Message        string `json:"Message"`
	FirstTimestamp string `json:"FirstTimestamp"`
	LastTimestamp  string `json:"LastTimestamp"`
	Reason         string `json:"Reason"`
}

type state struct {
	State        string `json:"State"`
	DetailStatus string `json:"DetailStatus,omitempty"`
	ExitCode     int    `json:"ExitCode"`
	StartTime    string `json:"StartTime,omitempty"`
	FinishTime   string `json:"FinishTime,omitempty"`
	Reason       string `json:"Reason,omitempty"`
	Message      string `json:"Message,omitempty"`
	Signal       int    `json:"Signal,omitempty"`
}

type envVar struct {
	Key       string
	Value     string
	FieldPath string
}

// envVarJSON is an environment variable as DescribeContainerGroups returns
// it: a field reference is ValueFrom.FieldRef.FieldPath.
type envVarJSON struct {
	Key       string     `json:"Key"`
	Value     string     `json:"Value"`
	ValueFrom *valueFrom `json:"ValueFrom,omitempty"`
}

type valueFrom struct {
	FieldRef struct {
		FieldPath string `json:"FieldPath"`
	} `json:"FieldRef"`
}

func (v envVar) MarshalJSON() ([]byte, error) {
	out := envVarJSON{Key: v.Key, Value: v.Value}
	if v.FieldPath != "" {
		out.ValueFrom = &valueFrom{}
		out.ValueFrom.FieldRef.FieldPath = v.FieldPath
	}
	return json.Marshal(out)
}

func (v *envVar) UnmarshalJSON(b []byte) error {
	var in envVarJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*v = envVar{Key: in.Key, Value: in.Value}
	if in.ValueFrom != nil {
		v.FieldPath = in.ValueFrom.FieldRef.FieldPath
	}
	return nil
}

type port struct {
	Port     int    `json:"Port"`
	Protocol string `json:"Protocol"`
}

type volumeMount struct {
	Name      string `json:"Name"`
	MountPath string `json:"MountPath"`
	SubPath   string `json:"SubPath,omitempty"`
	ReadOnly  bool   `json:"ReadOnly"`
}

type container struct {
	Name            string        `json:"Name"`
	Image           string        `json:"Image"`
	Cpu             float64       `json:"Cpu"`
	Memory          float64       `json:"Memory"`
	WorkingDir      string        `json:"WorkingDir,omitempty"`
	ImagePullPolicy string        `json:"ImagePullPolicy,omitempty"`
	RestartCount    int           `json:"RestartCount"`
	Ready           bool          `json:"Ready"`
	Commands        []string      `json:"Commands"`
	Args            []string      `json:"Args"`
	EnvironmentVars []envVar      `json:"EnvironmentVars"`
	Ports           []port        `json:"Ports"`
	VolumeMounts    []volumeMount `json:"VolumeMounts"`
	CurrentState    state         `json:"CurrentState"`
	PreviousState   state         `json:"PreviousState"`
	Tty             bool          `json:"Tty"`
	Stdin           bool          `json:"Stdin"`
}

// configFile is one file of a ConfigFileVolume; Content goes out base64
// encoded, as it came in.
type configFile struct {
	Path    string `json:"Path"`
	Content []byte `json:"Content"`
	Mode    int32  `json:"Mode,omitempty"`
}

// mode is the file's mode in its volume v: its own, else v's default,
// else private (0600).
func (f configFile) mode(v volume) os.FileMode {
	switch {
	case f.Mode != 0:
		return os.FileMode(f.Mode) & os.ModePerm
	case v.DefaultMode != 0:
		return os.FileMode(v.DefaultMode) & os.ModePerm
	}
	return 0o600
}

type volume struct {
	Name       string       `json:"Name"`
	Type       string       `json:"Type"`
	NFSServer  string       `json:"NFSVolumeServer,omitempty"`
	NFSPath    string       `json:"NFSVolumePath,omitempty"`
	Medium     string       `json:"EmptyDirVolumeMedium,omitempty"`
	DiskID     string       `json:"DiskVolumeDiskId,omitempty"`
	ConfigFile []configFile `json:"ConfigFileVolumeConfigFileToPaths,omitempty"`
	// DefaultMode is a ConfigFileVolume's files' mode when a file has none.
	DefaultMode int32 `json:"ConfigFileVolumeDefaultMode,omitempty"`
}

const timeFormat = "2006-01-02T15:04:05Z"

// params is a request's decoded query.
type params url.Values

func (p params) get(k string) string { return url.Values(p).Get(k) }

// indices returns the N of every "prefix.N." (or "prefix.N") key, sorted.
func (p params) indices(prefix string) []int {
	seen := map[int]bool{}
	for k := range p {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		nStr, _, _ := strings.Cut(rest, ".")
		if n, err := strconv.Atoi(nStr); err == nil && n > 0 {
			seen[n] = true
		}
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// list reads prefix.1, prefix.2, ... in order.
func (p params) list(prefix string) []string {
	var out []string
	for _, n := range p.indices(prefix) {
		out = append(out, p.get(fmt.Sprintf("%s.%d", prefix, n)))
	}
	return out
}

func (p params) bool(k string) (bool, *apiError) {
	v := p.get(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalidParam(k, "not a boolean")
	}
	return b, nil
}

func (p params) float(k string) (float64, *apiError) {
	v := p.get(k)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, invalidParam(k, "not a non-negative number")
	}
	return f, nil
}

func (p params) int(k string, def int) (int, *apiError) {
	v := p.get(k)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalidParam(k, "not an integer")
	}
	return n, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,126}[a-z0-9])?$`)

// hostNameRE is a HostName: a pod's name or spec.hostname.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// parseContainers reads Container.N.* or InitContainer.N.*.
func parseContainers(p params, prefix string) ([]*container, *apiError) {
	var out []*container
	seen := map[string]bool{}
	for _, n := range p.indices(prefix) {
		pre := fmt.Sprintf("%s.%d.", prefix, n)
		c, apiErr := parseContainer(p, pre)
		if apiErr != nil {
			return nil, apiErr
		}
		if seen[c.Name] {
			return nil, invalidParam(pre+"Name", "duplicate container name "+c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return nil, missingParam(pre + "Image")
		}
		out = append(out, c)
	}
	return out, nil
}

// parseContainer reads one container's fields under pre ("Container.N.").
// Probe exec commands arrive as the SDK's literal "<[]string Value>" when
// set through its typed structs: accepted and ignored, as ECI does.
func parseContainer(p params, pre string) (*container, *apiError) {
	c := &container{
		Name: p.get(pre + "Name"), Image: p.get(pre + "Image"), WorkingDir: p.get(pre + "WorkingDir"),
		ImagePullPolicy: p.get(pre + "ImagePullPolicy"),
		Commands:        p.list(pre + "Command"), Args: p.list(pre + "Arg"),
	}
	if c.Name == "" {
		return nil, missingParam(pre + "Name")
	}
	if !nameRE.MatchString(c.Name) {
		return nil, invalidParam(pre+"Name", "must be lower-case letters, digits and hyphens")
	}
	var e *apiError
	if c.Cpu, e = p.float(pre + "Cpu"); e != nil {
		return nil, e
	}
	if c.Memory, e = p.float(pre + "Memory"); e != nil {
		return nil, e
	}
	if c.Tty, e = p.bool(pre + "Tty"); e != nil {
		return nil, e
	}
	if c.Stdin, e = p.bool(pre + "Stdin"); e != nil {
		return nil, e
	}
	if c.EnvironmentVars, e = parseEnv(p, pre+"EnvironmentVar"); e != nil {
		return nil, e
	}
	if c.Ports, e = parsePorts(p, pre+"Port"); e != nil {
		return nil, e
	}
	if c.VolumeMounts, e = parseMounts(p, pre+"VolumeMount"); e != nil {
		return nil, e
	}
	return c, nil
}

// bare returns the value of "prefix.M" itself. The SDK's typed
// UpdateContainerGroup declares EnvironmentVar, Port and VolumeMount as
// []string, so they reach the wire as Container.N.EnvironmentVar.M=<string>
// with no .Key/.Value: the emulator reads such a string as KEY=VALUE,
// PORT[/PROTOCOL] and NAME:MOUNTPATH[:ro] respectively (ECI does not
// document what it makes of them).
func bare(p params, prefix string, m int) (string, bool) {
	v, ok := p[fmt.Sprintf("%s.%d", prefix, m)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func parseEnv(p params, prefix string) ([]envVar, *apiError) {
	var out []envVar
	for _, m := range p.indices(prefix) {
		ep := fmt.Sprintf("%s.%d.", prefix, m)
		ev := envVar{Key: p.get(ep + "Key"), Value: p.get(ep + "Value"), FieldPath: p.get(ep + "FieldRef.FieldPath")}
		if s, ok := bare(p, prefix, m); ok && ev.Key == "" {
			k, v, found := strings.Cut(s, "=")
			if !found || k == "" {
				return nil, invalidParam(strings.TrimSuffix(ep, "."), "want KEY=VALUE")
			}
			ev.Key, ev.Value = k, v
		}
		if ev.Key == "" {
			return nil, missingParam(ep + "Key")
		}
		if ev.FieldPath != "" && ev.FieldPath != "status.podIP" {
			return nil, invalidParam(ep+"FieldRef.FieldPath", "only status.podIP is supported")
		}
		out = append(out, ev)
	}
	return out, nil
}

func parsePorts(p params, prefix string) ([]port, *apiError) {
	var out []port
	for _, m := range p.indices(prefix) {
		pp := fmt.Sprintf("%s.%d.", prefix, m)
		num, proto := p.get(pp+"Port"), p.get(pp+"Protocol")
		if s, ok := bare(p, prefix, m); ok && num == "" {
			num, proto, _ = strings.Cut(s, "/")
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return nil, invalidParam(pp+"Port", "must be 1-65535")
		}
		if proto != "" && proto != "TCP" && proto != "UDP" {
			return nil, invalidParam(pp+"Protocol", "must be TCP or UDP")
		}
		out = append(out, port{Port: n, Protocol: proto})
	}
	return out, nil
}

func parseMounts(p params, prefix string) ([]volumeMount, *apiError) {
	var out []volumeMount
	for _, m := range p.indices(prefix) {
		vp := fmt.Sprintf("%s.%d.", prefix, m)
		ro, e := p.bool(vp + "ReadOnly")
		if e != nil {
			return nil, e
		}
		vm := volumeMount{Name: p.get(vp + "Name"), MountPath: p.get(vp + "MountPath"), SubPath: p.get(vp + "SubPath"), ReadOnly: ro}
		if s, ok := bare(p, prefix, m); ok && vm.Name == "" {
			parts := strings.Split(s, ":")
			if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro") {
				return nil, invalidParam(strings.TrimSuffix(vp, "."), "want NAME:MOUNTPATH[:ro]")
			}
			vm.Name, vm.MountPath, vm.ReadOnly = parts[0], parts[1], len(parts) == 3
		}
		if vm.Name == "" || vm.MountPath == "" {
			return nil, missingParam(vp + "Name/MountPath")
		}
		out = append(out, vm)
	}
	return out, nil
}

// parseTags reads Tag.N.Key/Value, with ECI's limits.
func parseTags(p params) ([]tag, *apiError) {
	var tags []tag
	for _, n := range p.indices("Tag") {
		k, v := p.get(fmt.Sprintf("Tag.%d.Key", n)), p.get(fmt.Sprintf("Tag.%d.Value", n))
		if k == "" {
			return nil, missingParam(fmt.Sprintf("Tag.%d.Key", n))
		}
		if strings.HasPrefix(k, "aliyun") || strings.HasPrefix(k, "acs:") || len(k) > 128 || len(v) > 128 {
			return nil, invalidParam(fmt.Sprintf("Tag.%d.Key", n), "reserved prefix or over 128 characters")
		}
		tags = append(tags, tag{Key: k, Value: v})
	}
	if len(tags) > 20 {
		return nil, invalidParam("Tag", "at most 20 tags")
	}
	return tags, nil
}

// tagFilter reads Tag.N as a filter: a tag with an empty Value matches any value.
func tagFilter(p params) []tag {
	var want []tag
	for _, n := range p.indices("Tag") {
		want = append(want, tag{Key: p.get(fmt.Sprintf("Tag.%d.Key", n)), Value: p.get(fmt.Sprintf("Tag.%d.Value", n))})
	}
	return want
}

// hasTags: every filter tag is among tags.
func hasTags(tags, want []tag) bool {
	for _, w := range want {
		found := false
		for _, t := range tags {
			if t.Key == w.Key && (w.Value == "" || t.Value == w.Value) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func parseCredentials(p params) ([]registryCredential, *apiError) {
	var out []registryCredential
	for _, n := range p.indices("ImageRegistryCredential") {
		pre := fmt.Sprintf("ImageRegistryCredential.%d.", n)
		c := registryCredential{Server: p.get(pre + "Server"), UserName: p.get(pre + "UserName"), Password: p.get(pre + "Password")}
		if c.Server == "" {
			return nil, missingParam(pre + "Server")
		}
		out = append(out, c)
	}
	return out, nil
}

// parseDNSConfig reads DnsConfig.NameServer.N, .Search.N and
// .Option.N.Name/Value; nil when none is given.
func parseDNSConfig(p params) (*dnsConfig, *apiError) {
	d := &dnsConfig{NameServers: p.list("DnsConfig.NameServer"), Searches: p.list("DnsConfig.Search"), Options: []dnsOption{}}
	for _, n := range p.indices("DnsConfig.Option") {
		pre := fmt.Sprintf("DnsConfig.Option.%d.", n)
		o := dnsOption{Name: p.get(pre + "Name"), Value: p.get(pre + "Value")}
		if o.Name == "" {
			return nil, missingParam(pre + "Name")
		}
		d.Options = append(d.Options, o)
	}
	if len(d.NameServers) == 0 && len(d.Searches) == 0 && len(d.Options) == 0 {
		return nil, nil
	}
	for _, ns := range d.NameServers {
		if net.ParseIP(ns) == nil {
			return nil, invalidParam("DnsConfig.NameServer", ns+" is not an IP address")
		}
	}
	if d.NameServers == nil {
		d.NameServers = []string{}
	}
	if d.Searches == nil {
		d.Searches = []string{}
	}
	return d, nil
}

// idList reads a JSON array of ids (ContainerGroupIds, VirtualNodeIds).
func idList(p params, key string, max int) ([]string, *apiError) {
	raw := p.get(key)
	if raw == "" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal([]byte(raw), &ids); err != nil {
		return nil, invalidParam(key, "must be a JSON array of ids")
	}
	if len(ids) > max {
		return nil, invalidParam(key, fmt.Sprintf("at most %d ids", max))
	}
	return ids, nil
}

// page reads Limit (1..max, default def) and NextToken, an opaque offset.
func page(p params, def, max int) (start, limit int, apiErr *apiError) {
	if limit, apiErr = p.int("Limit", def); apiErr != nil {
		return 0, 0, apiErr
	}
	if limit < 1 || limit > max {
		return 0, 0, invalidParam("Limit", fmt.Sprintf("must be 1-%d", max))
	}
	if tok := p.get("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return 0, 0, invalidParam("NextToken", "not a token this API issued")
		}
		start = n
	}
	return start, limit, nil
}

// nextToken is the NextToken of a page ending at end of total; "" at the end.
func nextToken(end, total int) string {
	if end >= total {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
}

func parseVolumes(p params) ([]volume, *apiError) {
	var out []volume
	for _, n := range p.indices("Volume") {
		pre := fmt.Sprintf("Volume.%d.", n)
		v := volume{Name: p.get(pre + "Name"), Type: p.get(pre + "Type")}
		if v.Name == "" {
			return nil, missingParam(pre + "Name")
		}
		switch v.Type {
		case "EmptyDirVolume":
			v.Medium = p.get(pre + "EmptyDirVolume.Medium")
		case "NFSVolume":
			v.NFSServer, v.NFSPath = p.get(pre+"NFSVolume.Server"), p.get(pre+"NFSVolume.Path")
			if v.NFSServer == "" {
				return nil, missingParam(pre + "NFSVolume.Server")
			}
		case "DiskVolume":
			v.DiskID = p.get(pre + "DiskVolume.DiskId")
			if v.DiskID == "" {
				return nil, missingParam(pre + "DiskVolume.DiskId")
			}
		case "ConfigFileVolume":
			// The SDK's field is DefaultModel, vnode's client sends
			// DefaultMode: either is the default.
			dm := pre + "ConfigFileVolume.DefaultMode"
			if p.get(dm) == "" {
				dm = pre + "ConfigFileVolume.DefaultModel"
			}
			var apiErr *apiError
			if v.DefaultMode, apiErr = fileMode(p, dm); apiErr != nil {
				return nil, apiErr
			}
			for _, m := range p.indices(pre + "ConfigFileVolume.ConfigFileToPath") {
				fp := fmt.Sprintf("%sConfigFileVolume.ConfigFileToPath.%d.", pre, m)
				content, err := base64.StdEncoding.DecodeString(p.get(fp + "Content"))
				if err != nil {
					return nil, invalidParam(fp+"Content", "not base64")
				}
				path := p.get(fp + "Path")
				if path == "" || strings.HasPrefix(path, "/") || strings.Contains(path, "..") {
					return nil, invalidParam(fp+"Path", "must be a relative path inside the volume")
				}
				mode, apiErr := fileMode(p, fp+"Mode")
				if apiErr != nil {
					return nil, apiErr
				}
				v.ConfigFile = append(v.ConfigFile, configFile{Path: path, Content: content, Mode: mode})
			}
		case "":
			return nil, missingParam(pre + "Type")
		default:
			return nil, invalidParam(pre+"Type", "unsupported volume type "+v.Type)
		}
		out = append(out, v)
	}
	return out, nil
}

// fileMode is the file mode parameter k (decimal, as the SDK sends it;
// 0 when absent).
func fileMode(p params, k string) (int32, *apiError) {
	s := p.get(k)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 || n > 0o777 {
		return 0, invalidParam(k, "a file mode from 0 to 0777 (511), in decimal")
	}
	return int32(n), nil
}

// roundSpec rounds up to a sold spec as ECI does (model's table of sold
// specs); ok is false above the largest.
func roundSpec(cpu, mem float64) (float64, float64, bool) {
	s, ok := model.RoundUp(cpu, mem)
	return s.CPU, s.MemoryGi, ok
}

// instanceSizes is vCPUs per ECS size suffix, and familyRatios GiB of
// memory per vCPU of the ECS families ECI offers (compute c, general
// purpose g, memory r); gpuTypes are the GPU types as {vCPU, GiB}.
var (
	instanceSizes = map[string]float64{"large": 2, "xlarge": 4, "2xlarge": 8, "3xlarge": 12, "4xlarge": 16,
		"6xlarge": 24, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64}
	familyRatios = map[string]float64{
		"c5": 2, "c6": 2, "c6e": 2, "c7": 2, "c7a": 2, "c8i": 2, "c8a": 2,
		"g5": 4, "g6": 4, "g6e": 4, "g7": 4, "g7a": 4, "g8i": 4, "g8a": 4,
		"r5": 8, "r6": 8, "r6e": 8, "r7": 8, "r7a": 8, "r8i": 8, "r8a": 8,
	}
	gpuTypes = map[string][2]float64{
		"ecs.gn6i-c4g1.xlarge": {4, 15}, "ecs.gn6i-c8g1.2xlarge": {8, 31}, "ecs.gn6i-c16g1.4xlarge": {16, 62},
		"ecs.gn6v-c8g1.2xlarge": {8, 32}, "ecs.gn7i-c8g1.2xlarge": {8, 30}, "ecs.gn7i-c16g1.4xlarge": {16, 60},
	}
)

// instanceTypeSpec is the vCPU and memory (GiB) of one InstanceType entry:
// an ECS type (ecs.<family>.<size>) ECI offers, or a vCPU-memory spec
// like 2-4Gi, rounded up to a sold one as ECI does.
func instanceTypeSpec(t string) (cpu, mem float64, ok bool) {
	if gpu, found := gpuTypes[t]; found {
		return gpu[0], gpu[1], true
	}
	if rest, isECS := strings.CutPrefix(t, "ecs."); isECS {
		family, size, _ := strings.Cut(rest, ".")
		ratio, okF := familyRatios[family]
		n, okS := instanceSizes[size]
		return n, n * ratio, okF && okS
	}
	c, m, found := strings.Cut(strings.TrimSuffix(t, "Gi"), "-")
	if !found || !strings.HasSuffix(t, "Gi") {
		return 0, 0, false
	}
	cf, err1 := strconv.ParseFloat(c, 64)
	mf, err2 := strconv.ParseFloat(m, 64)
	if err1 != nil || err2 != nil || cf <= 0 || mf <= 0 {
		return 0, 0, false
	}
	return roundSpec(cf, mf)
}

// parseInstanceTypes reads InstanceType: up to 5 comma-separated entries,
// each an ECS type or vCPU-memory spec ECI offers. The instance gets the
// first entry's size (this emulator always has capacity for it).
func parseInstanceTypes(v string) (types string, cpu, mem float64, apiErr *apiError) {
	entries := strings.Split(v, ",")
	if len(entries) > 5 {
		return "", 0, 0, invalidParam("InstanceType", "at most 5 instance types")
	}
	for i, t := range entries {
		t = strings.TrimSpace(t)
		c, m, ok := instanceTypeSpec(t)
		if !ok {
			return "", 0, 0, invalidParam("InstanceType", fmt.Sprintf("%q is not an instance type ECI offers", t))
		}
		entries[i] = t
		if i == 0 {
			cpu, mem = c, m
		}
	}
	return strings.Join(entries, ","), cpu, mem, nil
}
