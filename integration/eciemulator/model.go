package eciemulator

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// group is one container group, in the shape DescribeContainerGroups
// returns (JSON field names are ECI's).
type group struct {
	ContainerGroupID   string       `json:"ContainerGroupId"`
	ContainerGroupName string       `json:"ContainerGroupName"`
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

	clientToken string
	paramsHash  string
	created     time.Time
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
	Key       string `json:"Key"`
	Value     string `json:"Value"`
	FieldPath string `json:"-"`
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

type configFile struct {
	Path    string `json:"Path"`
	Content []byte `json:"-"`
}

type volume struct {
	Name       string       `json:"Name"`
	Type       string       `json:"Type"`
	NFSServer  string       `json:"NFSVolumeServer,omitempty"`
	NFSPath    string       `json:"NFSVolumePath,omitempty"`
	Medium     string       `json:"EmptyDirVolumeMedium,omitempty"`
	DiskID     string       `json:"DiskVolumeDiskId,omitempty"`
	ConfigFile []configFile `json:"ConfigFileVolumeConfigFileToPaths,omitempty"`
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

// parseContainers reads Container.N.* or InitContainer.N.*.
func parseContainers(p params, prefix string) ([]*container, *apiError) {
	var out []*container
	seen := map[string]bool{}
	for _, n := range p.indices(prefix) {
		pre := fmt.Sprintf("%s.%d.", prefix, n)
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
		if seen[c.Name] {
			return nil, invalidParam(pre+"Name", "duplicate container name "+c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return nil, missingParam(pre + "Image")
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
		for _, m := range p.indices(pre + "EnvironmentVar") {
			ep := fmt.Sprintf("%sEnvironmentVar.%d.", pre, m)
			ev := envVar{Key: p.get(ep + "Key"), Value: p.get(ep + "Value"), FieldPath: p.get(ep + "FieldRef.FieldPath")}
			if ev.Key == "" {
				return nil, missingParam(ep + "Key")
			}
			if ev.FieldPath != "" && ev.FieldPath != "status.podIP" {
				return nil, invalidParam(ep+"FieldRef.FieldPath", "only status.podIP is supported")
			}
			c.EnvironmentVars = append(c.EnvironmentVars, ev)
		}
		for _, m := range p.indices(pre + "Port") {
			pp := fmt.Sprintf("%sPort.%d.", pre, m)
			n, e := p.int(pp+"Port", 0)
			if e != nil {
				return nil, e
			}
			if n < 1 || n > 65535 {
				return nil, invalidParam(pp+"Port", "must be 1-65535")
			}
			proto := p.get(pp + "Protocol")
			if proto != "" && proto != "TCP" && proto != "UDP" {
				return nil, invalidParam(pp+"Protocol", "must be TCP or UDP")
			}
			c.Ports = append(c.Ports, port{Port: n, Protocol: proto})
		}
		for _, m := range p.indices(pre + "VolumeMount") {
			vp := fmt.Sprintf("%sVolumeMount.%d.", pre, m)
			ro, e := p.bool(vp + "ReadOnly")
			if e != nil {
				return nil, e
			}
			vm := volumeMount{Name: p.get(vp + "Name"), MountPath: p.get(vp + "MountPath"), SubPath: p.get(vp + "SubPath"), ReadOnly: ro}
			if vm.Name == "" || vm.MountPath == "" {
				return nil, missingParam(vp + "Name/MountPath")
			}
			c.VolumeMounts = append(c.VolumeMounts, vm)
		}
		// Probe exec commands arrive as the SDK's literal "<[]string Value>"
		// when set through its typed structs: accepted and ignored, as ECI does.
		out = append(out, c)
	}
	return out, nil
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
				v.ConfigFile = append(v.ConfigFile, configFile{Path: path, Content: content})
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

// soldSpecs is what ECI sells (vCPU -> memory GiB), for rounding.
var soldSpecs = map[float64][]float64{
	0.25: {0.5, 1}, 0.5: {1, 2}, 1: {2, 4, 8}, 2: {1, 2, 4, 8, 16}, 4: {2, 4, 8, 16, 32}, 8: {4, 8, 16, 32, 64},
	12: {12, 24, 48, 96}, 16: {16, 32, 64, 128}, 24: {24, 48, 96, 192}, 32: {32, 64, 128, 256}, 52: {96, 192, 384}, 64: {128, 256, 512},
}

// roundSpec rounds up to a sold spec as ECI does; ok is false above the largest.
func roundSpec(cpu, mem float64) (float64, float64, bool) {
	cpus := make([]float64, 0, len(soldSpecs))
	for c := range soldSpecs {
		cpus = append(cpus, c)
	}
	sort.Float64s(cpus)
	for _, c := range cpus {
		if c+1e-9 < cpu {
			continue
		}
		for _, m := range soldSpecs[c] {
			if m+1e-9 >= mem {
				return c, m, true
			}
		}
	}
	return 0, 0, false
}
