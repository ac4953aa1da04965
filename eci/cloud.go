package eci

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/vnode-project/vnode/eci/model"
)

// flat builds a request's flattened parameters, ECI's way: lists as
// Name.1, Name.2 (1-based), structures as Name.Field, empty values left out.
type flat map[string]string

func (f flat) set(k, v string) {
	if v != "" {
		f[k] = v
	}
}

func (f flat) num(k string, v float64) {
	if v != 0 {
		f[k] = strconv.FormatFloat(v, 'f', -1, 64)
	}
}

func (f flat) int(k string, v int64) { f[k] = strconv.FormatInt(v, 10) }

func (f flat) bool(k string, v bool) {
	if v {
		f[k] = "true"
	}
}

func (f flat) list(k string, vs []string) {
	for i, v := range vs {
		f[fmt.Sprintf("%s.%d", k, i+1)] = v
	}
}

// CreateContainerGroup implements provider.Cloud.
func (c *Client) CreateContainerGroup(ctx context.Context, g *model.ContainerGroup) (string, string, error) {
	if g.ClientToken == "" {
		return "", "", &Error{Action: "CreateContainerGroup", Kind: KindInvalidInput, Err: fmt.Errorf("a ClientToken is required so that a retried create never makes a second instance")}
	}
	p := createParams(g)
	var out struct {
		RequestID        string `json:"RequestId"`
		ContainerGroupID string `json:"ContainerGroupId"`
	}
	if err := c.call(ctx, "CreateContainerGroup", p, &out); err != nil {
		return "", "", err
	}
	return out.ContainerGroupID, out.RequestID, nil
}

func createParams(g *model.ContainerGroup) flat {
	p := flat{}
	p.set("ContainerGroupName", g.Name)
	p.set("HostName", g.HostName)
	p.set("RestartPolicy", g.RestartPolicy)
	p.set("ClientToken", g.ClientToken)
	p.set("SecurityGroupId", g.SecurityGroupID)
	p.set("VSwitchId", strings.Join(g.VSwitchIDs, ","))
	p.set("ResourceGroupId", g.ResourceGroupID)
	p.set("RamRoleName", g.RAMRoleName)
	p.num("Cpu", g.CPU)
	p.num("Memory", g.MemoryGi)
	p.set("InstanceType", strings.Join(g.InstanceTypes, ","))
	p.set("SpotStrategy", g.SpotStrategy)
	p.num("SpotPriceLimit", g.SpotPriceLimit)
	p.bool("AutoMatchImageCache", g.AutoMatchImageCache)
	p.set("ImageSnapshotId", g.ImageSnapshotID)
	p.bool("AutoCreateEip", g.AutoCreateEIP)
	p.set("EipInstanceId", g.EIPInstanceID)
	if g.EIPBandwidth > 0 {
		p.int("EipBandwidth", int64(g.EIPBandwidth))
	}
	p.list("NtpServer", g.NTPServers)
	if g.TerminationGracePeriodSeconds != nil {
		p.int("TerminationGracePeriodSeconds", *g.TerminationGracePeriodSeconds)
	}
	if g.ActiveDeadlineSeconds != nil {
		p.int("ActiveDeadlineSeconds", *g.ActiveDeadlineSeconds)
	}
	setTags(p, g.Tags)
	for i, r := range g.RegistryCredentials {
		pre := fmt.Sprintf("ImageRegistryCredential.%d.", i+1)
		p.set(pre+"Server", r.Server)
		p.set(pre+"UserName", r.UserName)
		p.set(pre+"Password", r.Password)
	}
	for i, h := range g.HostAliases {
		pre := fmt.Sprintf("HostAliase.%d.", i+1)
		p.set(pre+"Ip", h.IP)
		p.list(pre+"Hostname", h.Hostnames)
	}
	p.set("DnsPolicy", g.DNS.Policy)
	p.list("DnsConfig.NameServer", g.DNS.Nameservers)
	p.list("DnsConfig.Search", g.DNS.Searches)
	for i, o := range g.DNS.Options {
		pre := fmt.Sprintf("DnsConfig.Option.%d.", i+1)
		p.set(pre+"Name", o.Name)
		if o.Value != nil {
			p.set(pre+"Value", *o.Value)
		}
	}
	for i, s := range g.Sysctls {
		pre := fmt.Sprintf("SecurityContext.Sysctl.%d.", i+1)
		p.set(pre+"Name", s.Name)
		p.set(pre+"Value", s.Value)
	}
	for i, v := range g.Volumes {
		pre := fmt.Sprintf("Volume.%d.", i+1)
		p.set(pre+"Name", v.Name)
		switch {
		case v.EmptyDir != nil:
			p.set(pre+"Type", "EmptyDirVolume")
			p.set(pre+"EmptyDirVolume.Medium", v.EmptyDir.Medium)
			p.set(pre+"EmptyDirVolume.SizeLimit", v.EmptyDir.SizeLimit)
		case v.ConfigFiles != nil:
			p.set(pre+"Type", "ConfigFileVolume")
			if v.ConfigFiles.DefaultMode != 0 {
				p.int(pre+"ConfigFileVolume.DefaultMode", int64(v.ConfigFiles.DefaultMode))
			}
			for j, f := range v.ConfigFiles.Files {
				fp := fmt.Sprintf("%sConfigFileVolume.ConfigFileToPath.%d.", pre, j+1)
				p[fp+"Path"] = f.Path
				p[fp+"Content"] = base64.StdEncoding.EncodeToString(f.Content)
				if f.Mode != 0 {
					p.int(fp+"Mode", int64(f.Mode))
				}
			}
		case v.NFS != nil:
			p.set(pre+"Type", "NFSVolume")
			p.set(pre+"NFSVolume.Server", v.NFS.Server)
			p.set(pre+"NFSVolume.Path", v.NFS.Path)
			p.bool(pre+"NFSVolume.ReadOnly", v.NFS.ReadOnly)
		case v.Disk != nil:
			p.set(pre+"Type", "DiskVolume")
			p.set(pre+"DiskVolume.DiskId", v.Disk.DiskID)
			p.set(pre+"DiskVolume.FsType", v.Disk.FSType)
		}
	}
	for i := range g.InitContainers {
		containerParams(p, fmt.Sprintf("InitContainer.%d.", i+1), &g.InitContainers[i])
	}
	for i := range g.Containers {
		containerParams(p, fmt.Sprintf("Container.%d.", i+1), &g.Containers[i])
	}
	return p
}

func containerParams(p flat, pre string, c *model.Container) {
	p.set(pre+"Name", c.Name)
	p.set(pre+"Image", c.Image)
	p.set(pre+"ImagePullPolicy", c.ImagePullPolicy)
	p.set(pre+"WorkingDir", c.WorkingDir)
	// Arguments go one per index, so spaces, quotes and empty strings
	// survive: an empty argument is still sent.
	for i, a := range c.Command {
		p[fmt.Sprintf("%sCommand.%d", pre, i+1)] = a
	}
	for i, a := range c.Args {
		p[fmt.Sprintf("%sArg.%d", pre, i+1)] = a
	}
	p.num(pre+"Cpu", c.CPU)
	p.num(pre+"Memory", c.MemoryGi)
	if c.GPU > 0 {
		p.int(pre+"Gpu", int64(c.GPU))
	}
	p.bool(pre+"Stdin", c.Stdin)
	p.bool(pre+"StdinOnce", c.StdinOnce)
	p.bool(pre+"Tty", c.TTY)
	for i, e := range c.Env {
		ep := fmt.Sprintf("%sEnvironmentVar.%d.", pre, i+1)
		p[ep+"Key"] = e.Name
		if e.FieldPath != "" {
			p[ep+"FieldRef.FieldPath"] = e.FieldPath
		} else {
			p.set(ep+"Value", e.Value)
		}
	}
	for i, pt := range c.Ports {
		pp := fmt.Sprintf("%sPort.%d.", pre, i+1)
		p.int(pp+"Port", int64(pt.Port))
		p.set(pp+"Protocol", pt.Protocol)
	}
	for i, m := range c.VolumeMounts {
		mp := fmt.Sprintf("%sVolumeMount.%d.", pre, i+1)
		p.set(mp+"Name", m.Name)
		p.set(mp+"MountPath", m.MountPath)
		p.set(mp+"SubPath", m.SubPath)
		p.bool(mp+"ReadOnly", m.ReadOnly)
	}
	probe := func(name string, pr *model.Probe) {
		if pr == nil {
			return
		}
		pp := pre + name + "."
		handlerParams(p, pp, "", pr.Handler)
		for k, v := range map[string]int32{"InitialDelaySeconds": pr.InitialDelaySeconds, "PeriodSeconds": pr.PeriodSeconds, "TimeoutSeconds": pr.TimeoutSeconds, "SuccessThreshold": pr.SuccessThreshold, "FailureThreshold": pr.FailureThreshold} {
			if v != 0 {
				p.int(pp+k, int64(v))
			}
		}
	}
	probe("LivenessProbe", c.LivenessProbe)
	probe("ReadinessProbe", c.ReadinessProbe)
	probe("StartupProbe", c.StartupProbe)
	if c.PostStart != nil {
		handlerParams(p, pre+"LifecyclePostStartHandler", "hook", *c.PostStart)
	}
	if c.PreStop != nil {
		handlerParams(p, pre+"LifecyclePreStopHandler", "hook", *c.PreStop)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			p.int(pre+"SecurityContext.RunAsUser", *sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			p.int(pre+"SecurityContext.RunAsGroup", *sc.RunAsGroup)
		}
		p.bool(pre+"SecurityContext.ReadOnlyRootFilesystem", sc.ReadOnlyRootFilesystem)
		p.list(pre+"SecurityContext.Capability.Add", sc.AddCapabilities)
	}
}

// handlerParams writes a probe (ECI: .Exec.Command.N, .HttpGet.Path, ...)
// or a lifecycle hook (ECI: HandlerExec.N, HandlerHttpGetPath, ...).
func handlerParams(p flat, pre, kind string, h model.Handler) {
	if kind == "hook" {
		p.list(pre+"Exec", h.Exec)
		if g := h.HTTPGet; g != nil {
			p.set(pre+"HttpGetHost", g.Host)
			p.set(pre+"HttpGetPath", g.Path)
			p.int(pre+"HttpGetPort", int64(g.Port))
			p.set(pre+"HttpGetScheme", g.Scheme)
			for i, hd := range g.Headers {
				p.set(fmt.Sprintf("%sHttpGetHttpHeader.%d.Name", pre, i+1), hd.Name)
				p.set(fmt.Sprintf("%sHttpGetHttpHeader.%d.Value", pre, i+1), hd.Value)
			}
		}
		if t := h.TCPSocket; t != nil {
			p.set(pre+"TcpSocketHost", t.Host)
			p.int(pre+"TcpSocketPort", int64(t.Port))
		}
		return
	}
	// One parameter per argument: the fix for the SDK's "<[]string Value>".
	p.list(pre+"Exec.Command", h.Exec)
	if g := h.HTTPGet; g != nil {
		p.set(pre+"HttpGet.Path", g.Path)
		p.int(pre+"HttpGet.Port", int64(g.Port))
		p.set(pre+"HttpGet.Scheme", g.Scheme)
	}
	if t := h.TCPSocket; t != nil {
		p.int(pre+"TcpSocket.Port", int64(t.Port))
	}
}

// rawGroup is DescribeContainerGroups' element (only what vnode reads).
type rawGroup struct {
	ContainerGroupID string         `json:"ContainerGroupId"`
	Name             string         `json:"ContainerGroupName"`
	Status           string         `json:"Status"`
	ZoneID           string         `json:"ZoneId"`
	InstanceType     string         `json:"InstanceType"`
	Cpu              float64        `json:"Cpu"`
	Memory           float64        `json:"Memory"`
	IntranetIP       string         `json:"IntranetIp"`
	InternetIP       string         `json:"InternetIp"`
	CreationTime     string         `json:"CreationTime"`
	SucceededTime    string         `json:"SucceededTime"`
	FailedTime       string         `json:"FailedTime"`
	ExpiredTime      string         `json:"ExpiredTime"`
	Tags             []rawTag       `json:"Tags"`
	Events           []rawEvent     `json:"Events"`
	Containers       []rawContainer `json:"Containers"`
	InitContainers   []rawContainer `json:"InitContainers"`
}

type rawTag struct{ Key, Value string }

type rawEvent struct {
	Count          int32
	Type           string
	Name           string
	Message        string
	Reason         string
	FirstTimestamp string
	LastTimestamp  string
}

type rawState struct {
	State        string
	DetailStatus string
	ExitCode     int32
	StartTime    string
	FinishTime   string
	Reason       string
	Message      string
	Signal       int32
}

type rawContainer struct {
	Name          string
	Image         string
	Ready         bool
	RestartCount  int32
	CurrentState  rawState
	PreviousState rawState
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func (r rawState) domain() model.ContainerState {
	return model.ContainerState{State: r.State, DetailStatus: r.DetailStatus, ExitCode: r.ExitCode, Signal: r.Signal,
		Reason: r.Reason, Message: r.Message, Started: parseTime(r.StartTime), Finished: parseTime(r.FinishTime)}
}

func containers(in []rawContainer) []model.ContainerStatus {
	out := make([]model.ContainerStatus, 0, len(in))
	for _, c := range in {
		out = append(out, model.ContainerStatus{Name: c.Name, Image: c.Image, Ready: c.Ready, RestartCount: c.RestartCount,
			Current: c.CurrentState.domain(), Previous: c.PreviousState.domain()})
	}
	return out
}

func (g rawGroup) domain() *model.Instance {
	inst := &model.Instance{
		ID: g.ContainerGroupID, Name: g.Name, Status: g.Status, ZoneID: g.ZoneID, InstanceType: g.InstanceType,
		CPU: g.Cpu, MemoryGi: g.Memory, IntranetIP: g.IntranetIP, InternetIP: g.InternetIP,
		Created: parseTime(g.CreationTime), Succeeded: parseTime(g.SucceededTime), Failed: parseTime(g.FailedTime), Expired: parseTime(g.ExpiredTime),
		Tags: map[string]string{}, Containers: containers(g.Containers), InitContainers: containers(g.InitContainers),
	}
	for _, t := range g.Tags {
		inst.Tags[t.Key] = t.Value
	}
	for _, e := range g.Events {
		inst.Events = append(inst.Events, model.Event{Type: e.Type, Reason: e.Reason, Message: e.Message, Name: e.Name, Count: e.Count,
			First: parseTime(e.FirstTimestamp), Last: parseTime(e.LastTimestamp)})
	}
	return inst
}

// ListContainerGroups implements provider.Cloud: every page of
// DescribeContainerGroups filtered by tags (20 groups a page, ECI's
// maximum), each handed to each as it comes.
func (c *Client) ListContainerGroups(ctx context.Context, tags map[string]string, each func([]*model.Instance) error) error {
	p := flat{"Limit": "20"}
	setTags(p, tags)
	return pages(ctx, c, "DescribeContainerGroups", p, func(page *groupsPage) error {
		out := make([]*model.Instance, 0, len(page.ContainerGroups))
		for _, g := range page.ContainerGroups {
			out = append(out, g.domain())
		}
		return each(out)
	})
}

// pages calls action with p, then again with each NextToken the answers
// give, decoding each answer once, into a fresh page, handed to take; an
// error of take's ends it.
func pages[P any, PP interface {
	*P
	next() string
}](ctx context.Context, c *Client, action string, p flat, take func(PP) error) error {
	for {
		page := PP(new(P))
		if err := c.call(ctx, action, p, page); err != nil {
			return err
		}
		if err := take(page); err != nil {
			return err
		}
		if page.next() == "" {
			return nil
		}
		p["NextToken"] = page.next()
	}
}

// groupsPage is one answer of DescribeContainerGroups.
type groupsPage struct {
	NextToken       string     `json:"NextToken"`
	ContainerGroups []rawGroup `json:"ContainerGroups"`
}

func (g *groupsPage) next() string { return g.NextToken }

// GetContainerGroups implements provider.Cloud: DescribeContainerGroups
// by id, 20 ids a call (ECI's maximum). Ids that no longer exist are
// simply absent from the answer.
func (c *Client) GetContainerGroups(ctx context.Context, ids []string) ([]*model.Instance, error) {
	var out []*model.Instance
	for len(ids) > 0 {
		n := min(len(ids), 20)
		b, _ := json.Marshal(ids[:n])
		ids = ids[n:]
		var page struct {
			ContainerGroups []rawGroup `json:"ContainerGroups"`
		}
		if err := c.call(ctx, "DescribeContainerGroups", flat{"ContainerGroupIds": string(b), "Limit": "20"}, &page); err != nil {
			return nil, err
		}
		for _, g := range page.ContainerGroups {
			out = append(out, g.domain())
		}
	}
	return out, nil
}

// ListStatuses implements provider.Cloud: every page of
// DescribeContainerGroupStatus (200 groups a page, against
// DescribeContainerGroups' 20) filtered by tags, and with changedWithin
// by SinceSecond (rounded up to whole seconds). Each entry's digest
// changes whenever anything in its status does, so the provider fetches
// details only for groups that changed.
func (c *Client) ListStatuses(ctx context.Context, tags map[string]string, changedWithin time.Duration) ([]model.GroupStatus, error) {
	p := flat{"Limit": "200"}
	setTags(p, tags)
	if changedWithin > 0 {
		p["SinceSecond"] = strconv.FormatInt(int64((changedWithin+time.Second-1)/time.Second), 10)
	}
	var out []model.GroupStatus
	err := pages(ctx, c, "DescribeContainerGroupStatus", p, func(page *statusPage) error {
		for _, st := range page.Data {
			out = append(out, st.domain())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// statusPage is one answer of DescribeContainerGroupStatus.
type statusPage struct {
	NextToken string        `json:"NextToken"`
	Data      []groupStatus `json:"Data"`
}

func (s *statusPage) next() string { return s.NextToken }

// groupStatus is one group of a status list: its id and status, and a
// digest of its pod status as it came. The pod status is hashed as the
// page is decoded, never decoded itself: the lists of a 10,000-pod node
// were most of a sync's CPU, and decoding each group again to hash it
// whole read each answer four times.
type groupStatus struct {
	ContainerGroupID string    `json:"ContainerGroupId"`
	Status           string    `json:"Status"`
	PodStatus        rawDigest `json:"PodStatus"`
}

func (g groupStatus) domain() model.GroupStatus {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(g.PodStatus))
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(g.Status))
	return model.GroupStatus{ID: g.ContainerGroupID, Status: g.Status, Digest: h.Sum64()}
}

// rawDigest is the FNV-1a hash of a JSON value's text.
type rawDigest uint64

func (d *rawDigest) UnmarshalJSON(raw []byte) error {
	h := fnv.New64a()
	_, _ = h.Write(raw)
	*d = rawDigest(h.Sum64())
	return nil
}

// DeleteContainerGroup implements provider.Cloud.
func (c *Client) DeleteContainerGroup(ctx context.Context, id string) error {
	return c.call(ctx, "DeleteContainerGroup", flat{"ContainerGroupId": id}, nil)
}

// ExecCommand implements provider.Cloud.
func (c *Client) ExecCommand(ctx context.Context, id, container string, cmd []string, tty, stdin bool) (string, error) {
	b, _ := json.Marshal(cmd)
	p := flat{"ContainerGroupId": id, "ContainerName": container, "Command": string(b), "TTY": strconv.FormatBool(tty), "Stdin": strconv.FormatBool(stdin)}
	var out struct {
		WebSocketURI string `json:"WebSocketUri"`
	}
	if err := c.call(ctx, "ExecContainerCommand", p, &out); err != nil {
		return "", err
	}
	return out.WebSocketURI, nil
}

// ContainerLog implements kubeletapi.LogSource, always with timestamps (the
// log layer needs them to page and follow without gaps or doubles).
func (c *Client) ContainerLog(ctx context.Context, req model.LogRequest) (string, error) {
	p := flat{"ContainerGroupId": req.InstanceID, "ContainerName": req.Container, "Timestamps": "true"}
	if req.Tail > 0 {
		p.int("Tail", int64(req.Tail))
	}
	if req.LimitBytes > 0 {
		p.int("LimitBytes", int64(req.LimitBytes))
	}
	if !req.Since.IsZero() {
		p["StartTime"] = req.Since.UTC().Format(time.RFC3339Nano)
	}
	p.bool("LastTime", req.Previous)
	var out struct {
		Content string `json:"Content"`
	}
	if err := c.call(ctx, "DescribeContainerLog", p, &out); err != nil {
		return "", err
	}
	return out.Content, nil
}

// InstanceMetrics implements kubeletapi.MetricsSource.
func (c *Client) InstanceMetrics(ctx context.Context, ids []string) (map[string]model.InstanceSample, error) {
	b, _ := json.Marshal(ids)
	var out struct {
		MonitorDatas []struct {
			ContainerGroupID string `json:"ContainerGroupId"`
			Records          []struct {
				Timestamp string
				CPU       struct{ UsageNanoCores, UsageCoreNanoSeconds uint64 }
				Memory    struct{ WorkingSet, UsageBytes, Rss, AvailableBytes uint64 }
				Network   struct {
					Interfaces []struct{ RxBytes, TxBytes, RxErrors, TxErrors uint64 }
				}
				Containers []struct {
					Name   string
					CPU    struct{ UsageNanoCores, UsageCoreNanoSeconds uint64 }
					Memory struct{ WorkingSet, UsageBytes, Rss uint64 }
				}
			}
		}
	}
	if err := c.call(ctx, "DescribeMultiContainerGroupMetric", flat{"ContainerGroupIds": string(b), "MetricType": "summary"}, &out); err != nil {
		return nil, err
	}
	res := map[string]model.InstanceSample{}
	for _, d := range out.MonitorDatas {
		if len(d.Records) == 0 {
			continue
		}
		r := d.Records[len(d.Records)-1]
		s := model.InstanceSample{Time: parseTime(r.Timestamp), Containers: map[string]model.Usage{},
			Usage: model.Usage{CPUUsageNanoCores: r.CPU.UsageNanoCores, CPUUsageCoreNanoSeconds: r.CPU.UsageCoreNanoSeconds,
				MemoryWorkingSetBytes: r.Memory.WorkingSet, MemoryUsageBytes: r.Memory.UsageBytes, MemoryRSSBytes: r.Memory.Rss, MemoryAvailableBytes: r.Memory.AvailableBytes}}
		for _, i := range r.Network.Interfaces {
			s.RxBytes += i.RxBytes
			s.TxBytes += i.TxBytes
			s.RxErrors += i.RxErrors
			s.TxErrors += i.TxErrors
		}
		for _, ct := range r.Containers {
			s.Containers[ct.Name] = model.Usage{CPUUsageNanoCores: ct.CPU.UsageNanoCores, CPUUsageCoreNanoSeconds: ct.CPU.UsageCoreNanoSeconds,
				MemoryWorkingSetBytes: ct.Memory.WorkingSet, MemoryUsageBytes: ct.Memory.UsageBytes, MemoryRSSBytes: ct.Memory.Rss}
		}
		res[d.ContainerGroupID] = s
	}
	return res, nil
}

// Check tells whether ECI answers (the node's Ready condition).
func (c *Client) Check(ctx context.Context) error {
	return c.call(ctx, "DescribeRegions", flat{}, nil)
}
