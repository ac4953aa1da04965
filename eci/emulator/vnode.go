package emulator

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// virtualNodeInfo is a virtual node as DescribeVirtualNodes returns it.
type virtualNodeInfo struct {
	VirtualNodeID   string  `json:"VirtualNodeId"`
	VirtualNodeName string  `json:"VirtualNodeName"`
	Status          string  `json:"Status"` // Pending, Ready or Failed
	CreationTime    string  `json:"CreationTime"`
	IntranetIP      string  `json:"IntranetIp"`
	InternetIP      string  `json:"InternetIp"`
	RegionID        string  `json:"RegionId"`
	ResourceGroupID string  `json:"ResourceGroupId"`
	VpcID           string  `json:"VpcId"`
	VSwitchID       string  `json:"VirtualNodeVSwitchId"`
	SecurityGroupID string  `json:"VirtualNodeSecurityGroupId"`
	Tags            []tag   `json:"Tags"`
	Events          []event `json:"Events"`
}

// virtualNode is a virtual node as saved: what DescribeVirtualNodes shows
// and the settings it does not.
type virtualNode struct {
	virtualNodeInfo
	Config virtualNodeConfig `json:"Config"`
}

type virtualNodeConfig struct {
	ZoneID              string  `json:"ZoneId"`
	ClusterDNS          string  `json:"ClusterDNS,omitempty"`
	ClusterDomain       string  `json:"ClusterDomain,omitempty"`
	CustomResources     string  `json:"CustomResources,omitempty"`
	KubeConfig          string  `json:"KubeConfig,omitempty"` // base64, as given
	EipInstanceID       string  `json:"EipInstanceId,omitempty"`
	EnablePublicNetwork bool    `json:"EnablePublicNetwork,omitempty"`
	TLSBootstrapEnabled bool    `json:"TlsBootstrapEnabled,omitempty"`
	Taints              []taint `json:"Taints,omitempty"`
	// AccessKeyID is the account that created the node: a hosted node
	// calls back with its credentials.
	AccessKeyID string `json:"AccessKeyId,omitempty"`
	// Hosted: a host runs the node and reports its status, instead of
	// the node turning Ready after Delays.VirtualNode.
	Hosted bool `json:"Hosted,omitempty"`
}

type taint struct {
	Key    string `json:"Key"`
	Value  string `json:"Value"`
	Effect string `json:"Effect"`
}

// vnodeNameRE: 2-128 lower-case letters, digits, periods and hyphens.
var vnodeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,126}[a-z0-9]$`)

// createVirtualNode implements CreateVirtualNode (not in the old SDK; a
// CommonRequest). VSwitchId and SecurityGroupId are required; the node is
// Pending, then Ready after Delays.VirtualNode.
func (e *Emulator) createVirtualNode(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	for _, k := range []string{"VSwitchId", "SecurityGroupId"} {
		if p.get(k) == "" {
			return nil, missingParam(k)
		}
	}
	cfg, apiErr := e.parseVirtualNodeConfig(p)
	if apiErr != nil {
		return nil, apiErr
	}
	name := p.get("VirtualNodeName")
	if name != "" && !vnodeNameRE.MatchString(name) {
		return nil, invalidParam("VirtualNodeName", "2-128 lower-case letters, digits, periods and hyphens")
	}
	tags, apiErr := parseTags(p)
	if apiErr != nil {
		return nil, apiErr
	}
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.nextIDLocked("vnd")
	if name == "" {
		name = id
	}
	if cfg.ZoneID == "" {
		cfg.ZoneID = e.cfg.Zones[e.seq%len(e.cfg.Zones)]
	}
	v := &virtualNode{virtualNodeInfo: virtualNodeInfo{
		VirtualNodeID: id, VirtualNodeName: name, Status: "Pending", CreationTime: now.Format(timeFormat),
		IntranetIP: fmt.Sprintf("172.16.%d.%d", (e.seq/250)%250, e.seq%250+2), RegionID: e.cfg.Region,
		ResourceGroupID: p.get("ResourceGroupId"), VpcID: vpcOf(p.get("VSwitchId")), VSwitchID: p.get("VSwitchId"),
		SecurityGroupID: p.get("SecurityGroupId"), Tags: tags, Events: []event{},
	}, Config: cfg}
	if cfg.EnablePublicNetwork || cfg.EipInstanceID != "" {
		v.InternetIP = fmt.Sprintf("47.96.%d.%d", (e.seq/250)%250, e.seq%250+2)
	}
	v.Events = addEvent(v.Events, id, "Normal", "Creating", "Creating the virtual node in "+cfg.ZoneID)
	e.vnodes[id] = v
	e.vnOrder = append(e.vnOrder, id)
	e.persist.otherChangedLocked()
	go e.virtualNodeLifecycle(id)
	return map[string]any{"VirtualNodeId": id}, nil
}

// parseVirtualNodeConfig reads the settings CreateVirtualNode takes beyond
// network, name and tags.
func (e *Emulator) parseVirtualNodeConfig(p params) (virtualNodeConfig, *apiError) {
	cfg := virtualNodeConfig{ZoneID: p.get("ZoneId"), ClusterDNS: p.get("ClusterDNS"), ClusterDomain: p.get("ClusterDomain"),
		CustomResources: p.get("CustomResources"), KubeConfig: p.get("KubeConfig"), EipInstanceID: p.get("EipInstanceId"),
		AccessKeyID: p.get("AccessKeyId")}
	if cfg.ZoneID != "" && !slices.Contains(e.cfg.Zones, cfg.ZoneID) {
		return cfg, invalidParam("ZoneId", "zone "+cfg.ZoneID+" is not in region "+e.cfg.Region)
	}
	if apiErr := checkClusterSettings(p); apiErr != nil {
		return cfg, apiErr
	}
	if cfg.KubeConfig != "" {
		if _, err := base64.StdEncoding.DecodeString(cfg.KubeConfig); err != nil {
			return cfg, invalidParam("KubeConfig", "must be base64")
		}
	}
	var apiErr *apiError
	if cfg.EnablePublicNetwork, apiErr = p.bool("EnablePublicNetwork"); apiErr != nil {
		return cfg, apiErr
	}
	if cfg.TLSBootstrapEnabled, apiErr = p.bool("TlsBootstrapEnabled"); apiErr != nil {
		return cfg, apiErr
	}
	for _, n := range p.indices("Taint") {
		pre := fmt.Sprintf("Taint.%d.", n)
		t := taint{Key: p.get(pre + "Key"), Value: p.get(pre + "Value"), Effect: p.get(pre + "Effect")}
		if t.Key == "" {
			return cfg, missingParam(pre + "Key")
		}
		switch t.Effect {
		case "NoSchedule", "PreferNoSchedule", "NoExecute":
		default:
			return cfg, invalidParam(pre+"Effect", "must be NoSchedule, PreferNoSchedule or NoExecute")
		}
		cfg.Taints = append(cfg.Taints, t)
	}
	return cfg, nil
}

// checkClusterSettings validates ClusterDNS (comma-separated IPs) and
// CustomResources (name=count,...), which Create and Update both take.
func checkClusterSettings(p params) *apiError {
	if dns := p.get("ClusterDNS"); dns != "" {
		for _, ip := range strings.Split(dns, ",") {
			if !isIP(strings.TrimSpace(ip)) {
				return invalidParam("ClusterDNS", ip+" is not an IP address")
			}
		}
	}
	if cr := p.get("CustomResources"); cr != "" {
		for _, kv := range strings.Split(cr, ",") {
			k, v, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			if !ok || k == "" || err != nil || n < 0 {
				return invalidParam("CustomResources", "want name=count,... with whole counts, not "+kv)
			}
		}
	}
	return nil
}

// vpcOf makes up the VPC of a vSwitch, the same one each time.
func vpcOf(vswitch string) string {
	h := sha256.Sum256([]byte(vswitch))
	return "vpc-" + hex.EncodeToString(h[:])[:16]
}

// virtualNodeLifecycle makes a Pending virtual node Ready.
func (e *Emulator) virtualNodeLifecycle(id string) {
	time.Sleep(e.cfg.Delays.VirtualNode)
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vnodes[id]
	if !ok || v.Status != "Pending" || e.closed || v.Config.Hosted {
		return
	}
	v.Status = "Ready"
	v.Events = addEvent(v.Events, id, "Normal", "NodeReady", "The virtual node is ready")
	e.persist.otherChangedLocked()
}

// describeVirtualNodes implements DescribeVirtualNodes: filters by ids (a
// JSON array of up to 20), name, status, tags and resource group; pages of
// Limit (at most 20).
func (e *Emulator) describeVirtualNodes(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	start, limit, apiErr := page(p, 20, 20)
	if apiErr != nil {
		return nil, apiErr
	}
	ids, apiErr := idList(p, "VirtualNodeIds", 20)
	if apiErr != nil {
		return nil, apiErr
	}
	switch s := p.get("Status"); s {
	case "", "Pending", "Ready", "Failed":
	default:
		return nil, invalidParam("Status", "must be Pending, Ready or Failed")
	}
	want := tagFilter(p)
	e.mu.Lock()
	defer e.mu.Unlock()
	var matched []*virtualNode
	for _, id := range e.vnOrder {
		v := e.vnodes[id]
		if (len(ids) > 0 && !slices.Contains(ids, id)) || !matches(p, "VirtualNodeName", v.VirtualNodeName) ||
			!matches(p, "Status", v.Status) || !matches(p, "ResourceGroupId", v.ResourceGroupID) || !hasTags(v.Tags, want) {
			continue
		}
		matched = append(matched, v)
	}
	end := min(start+limit, len(matched))
	out := []json.RawMessage{}
	for _, v := range matched[min(start, len(matched)):end] {
		b, err := json.Marshal(v.virtualNodeInfo)
		if err != nil {
			return nil, errf(0, "InternalError", "encoding virtual node "+v.VirtualNodeID+": "+err.Error())
		}
		out = append(out, b)
	}
	return map[string]any{"VirtualNodes": out, "TotalCount": len(matched), "NextToken": nextToken(end, len(matched))}, nil
}

// matches: the filter parameter k is absent or equals have.
func matches(p params, k, have string) bool {
	want := p.get(k)
	return want == "" || want == have
}

// updateVirtualNode implements UpdateVirtualNode: name, cluster DNS and
// domain, custom resources and tags (given tags replace all).
func (e *Emulator) updateVirtualNode(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	id := p.get("VirtualNodeId")
	if id == "" {
		return nil, missingParam("VirtualNodeId")
	}
	name := p.get("VirtualNodeName")
	if name != "" && !vnodeNameRE.MatchString(name) {
		return nil, invalidParam("VirtualNodeName", "2-128 lower-case letters, digits, periods and hyphens")
	}
	if apiErr := checkClusterSettings(p); apiErr != nil {
		return nil, apiErr
	}
	var tags []tag
	if len(p.indices("Tag")) > 0 {
		var apiErr *apiError
		if tags, apiErr = parseTags(p); apiErr != nil {
			return nil, apiErr
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vnodes[id]
	if !ok {
		return nil, virtualNodeNotFound(id)
	}
	if name != "" {
		v.VirtualNodeName = name
	}
	for k, dst := range map[string]*string{"ClusterDNS": &v.Config.ClusterDNS, "ClusterDomain": &v.Config.ClusterDomain, "CustomResources": &v.Config.CustomResources} {
		if val := p.get(k); val != "" {
			*dst = val
		}
	}
	if tags != nil {
		v.Tags = tags
	}
	v.Events = addEvent(v.Events, id, "Normal", "Updated", "Updated the virtual node")
	e.persist.otherChangedLocked()
	return map[string]any{}, nil
}

// deleteVirtualNode implements DeleteVirtualNode.
func (e *Emulator) deleteVirtualNode(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	id := p.get("VirtualNodeId")
	if id == "" {
		return nil, missingParam("VirtualNodeId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vnodes[id]
	if !ok {
		return nil, virtualNodeNotFound(id)
	}
	// ECI refuses while the node still has instances: those a node's
	// vnode-kubelet created carry its Kubernetes name in nodeTag.
	if n := e.instancesOfLocked(v); n > 0 {
		return nil, errf(http.StatusBadRequest, "IncorrectStatus",
			fmt.Sprintf("The virtual node %q still has %d instance(s); delete them (drain the node) first.", id, n))
	}
	delete(e.vnodes, id)
	e.vnOrder = removeID(e.vnOrder, id)
	e.persist.otherChangedLocked()
	return map[string]any{}, nil
}

// nodeTag is the tag vnode-kubelet puts on every instance with its node's
// name (provider/translate.TagNode; a test checks they agree).
const nodeTag = "vnode.io/node"

// nodeNames are the Kubernetes names a virtual node goes by: VNodectl's
// <region>.<id>, and its own name.
func (v *virtualNode) nodeNames() []string {
	return []string{v.RegionID + "." + v.VirtualNodeID, v.VirtualNodeName}
}

// instancesOfLocked counts the container groups of virtual node v.
func (e *Emulator) instancesOfLocked(v *virtualNode) int {
	names := v.nodeNames()
	n := 0
	for _, g := range e.groups {
		for _, t := range g.Tags {
			if t.Key == nodeTag && slices.Contains(names, t.Value) {
				n++
				break
			}
		}
	}
	return n
}

func isIP(s string) bool {
	return s != "" && net.ParseIP(s) != nil
}

// VirtualNodeToHost is what a host needs to run a virtual node as the
// cloud does: a vnode-kubelet that joins the cluster with the kubeconfig
// given to CreateVirtualNode and calls back with the creator's account.
type VirtualNodeToHost struct {
	ID, Region, NodeName       string
	VSwitchID, SecurityGroupID string
	ZoneID                     string
	KubeConfig                 []byte
	TLSBootstrap               bool
	AccessKeyID                string
	AccessKeySecret            string
	ClusterDNS, ClusterDomain  string
	Status                     string
}

// HostVirtualNodes claims every virtual node that was given a kubeconfig:
// from now on its status is what the host reports (ReportVirtualNode).
// Deleted nodes are absent, so the host stops them.
func (e *Emulator) HostVirtualNodes() []VirtualNodeToHost {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []VirtualNodeToHost
	for _, id := range e.vnOrder {
		v := e.vnodes[id]
		kc, err := base64.StdEncoding.DecodeString(v.Config.KubeConfig)
		if err != nil || len(kc) == 0 {
			continue
		}
		if !v.Config.Hosted {
			v.Config.Hosted = true
			e.persist.otherChangedLocked()
		}
		out = append(out, VirtualNodeToHost{
			ID: id, Region: v.RegionID, NodeName: v.RegionID + "." + id, VSwitchID: v.VSwitchID, SecurityGroupID: v.SecurityGroupID,
			ZoneID: v.Config.ZoneID, KubeConfig: kc, TLSBootstrap: v.Config.TLSBootstrapEnabled, AccessKeyID: v.Config.AccessKeyID,
			AccessKeySecret: e.cfg.Credentials[v.Config.AccessKeyID], ClusterDNS: v.Config.ClusterDNS, ClusterDomain: v.Config.ClusterDomain,
			Status: v.Status,
		})
	}
	return out
}

// ReportVirtualNode sets a hosted node's status (Pending, Ready or
// Failed) with an event saying why; an unchanged status records nothing.
func (e *Emulator) ReportVirtualNode(id, status, reason, message string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vnodes[id]
	if !ok || (v.Status == status && reason == "") {
		return
	}
	typ := "Normal"
	if status == "Failed" {
		typ = "Warning"
	}
	v.Status = status
	v.Events = addEvent(v.Events, id, typ, reason, message)
	e.persist.otherChangedLocked()
}
