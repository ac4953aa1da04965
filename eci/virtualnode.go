package eci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/vnode-project/vnode/eci/model"
)

// VirtualNodeSpec is what CreateVirtualNode and UpdateVirtualNode take
// (the CLI's `vnode create`). The SDK has no virtual-node actions, so they
// go out as CommonRequests with the documented parameters.
type VirtualNodeSpec struct {
	Name            string
	ZoneID          string
	VSwitchID       string
	SecurityGroupID string
	ResourceGroupID string
	ClusterDNS      []string
	ClusterDomain   string
	// CustomResources are extended resources, e.g. nvidia.com/gpu=4.
	CustomResources map[string]int64
	// KubeConfig is the kubeconfig the cloud-side node uses (sent base64).
	KubeConfig          []byte
	EipInstanceID       string
	EnablePublicNetwork bool
	TLSBootstrapEnabled bool
	Tags                map[string]string
	Taints              []VirtualNodeTaint
	// ClientToken makes a retried create idempotent.
	ClientToken string
}

// VirtualNodeTaint is one taint the cloud puts on the node.
type VirtualNodeTaint struct{ Key, Value, Effect string }

// VirtualNode is one DescribeVirtualNodes entry.
type VirtualNode struct {
	ID              string `json:"VirtualNodeId"`
	Name            string `json:"VirtualNodeName"`
	Status          string `json:"Status"`
	CreationTime    string `json:"CreationTime"`
	IntranetIP      string `json:"IntranetIp"`
	InternetIP      string `json:"InternetIp"`
	RegionID        string `json:"RegionId"`
	ResourceGroupID string `json:"ResourceGroupId"`
	VpcID           string `json:"VpcId"`
	VSwitchID       string `json:"VirtualNodeVSwitchId"`
	SecurityGroupID string `json:"VirtualNodeSecurityGroupId"`
	Tags            []struct {
		Key   string `json:"Key"`
		Value string `json:"Value"`
	} `json:"Tags"`
	Events []VirtualNodeEvent `json:"Events"`
}

// VirtualNodeEvent is one event ECI records on a virtual node.
type VirtualNodeEvent struct {
	Count          int    `json:"Count"`
	FirstTimestamp string `json:"FirstTimestamp"`
	LastTimestamp  string `json:"LastTimestamp"`
	Message        string `json:"Message"`
	Name           string `json:"Name"`
	Reason         string `json:"Reason"`
	Type           string `json:"Type"`
}

// CreatedVirtualNode is CreateVirtualNode's answer.
type CreatedVirtualNode struct {
	RequestID     string `json:"RequestId"`
	VirtualNodeID string `json:"VirtualNodeId"`
}

// VirtualNodeFilter narrows DescribeVirtualNodes; zero fields match all.
type VirtualNodeFilter struct {
	IDs    []string // at most 20
	Name   string
	Status string // Pending, Ready or Failed
	Tags   map[string]string
}

// CreateVirtualNode creates a virtual node and returns its id.
func (c *Client) CreateVirtualNode(ctx context.Context, s VirtualNodeSpec) (string, error) {
	out, err := c.CreateVirtualNodeRequest(ctx, s)
	return out.VirtualNodeID, err
}

// CreateVirtualNodeRequest creates a virtual node and returns ECI's whole
// answer (the request id too, which `vnode create` prints).
func (c *Client) CreateVirtualNodeRequest(ctx context.Context, s VirtualNodeSpec) (CreatedVirtualNode, error) {
	if s.ClientToken == "" {
		return CreatedVirtualNode{}, &Error{Action: "CreateVirtualNode", Kind: KindInvalidInput, Err: fmt.Errorf("a ClientToken is required so that a retried create never makes a second node")}
	}
	p := flat{}
	p.set("VSwitchId", s.VSwitchID)
	p.set("SecurityGroupId", s.SecurityGroupID)
	p.set("ZoneId", s.ZoneID)
	p.set("ResourceGroupId", s.ResourceGroupID)
	p.set("EipInstanceId", s.EipInstanceID)
	p.bool("EnablePublicNetwork", s.EnablePublicNetwork)
	p.bool("TlsBootstrapEnabled", s.TLSBootstrapEnabled)
	p.set("ClientToken", s.ClientToken)
	for i, t := range s.Taints {
		p[fmt.Sprintf("Taint.%d.Key", i+1)] = t.Key
		p.set(fmt.Sprintf("Taint.%d.Value", i+1), t.Value)
		p[fmt.Sprintf("Taint.%d.Effect", i+1)] = t.Effect
	}
	s.mutable(p)
	var out CreatedVirtualNode
	if err := c.call(ctx, "CreateVirtualNode", p, &out); err != nil {
		return CreatedVirtualNode{}, err
	}
	return out, nil
}

// UpdateVirtualNode changes what UpdateVirtualNode may change: the name,
// cluster DNS and domain, custom resources and tags.
func (c *Client) UpdateVirtualNode(ctx context.Context, id string, s VirtualNodeSpec) error {
	p := flat{"VirtualNodeId": id}
	s.mutable(p)
	return c.call(ctx, "UpdateVirtualNode", p, nil)
}

// mutable sets the parameters create and update share.
func (s VirtualNodeSpec) mutable(p flat) {
	p.set("VirtualNodeName", s.Name)
	p.set("ClusterDNS", strings.Join(s.ClusterDNS, ","))
	p.set("ClusterDomain", s.ClusterDomain)
	if len(s.KubeConfig) > 0 {
		p["KubeConfig"] = base64.StdEncoding.EncodeToString(s.KubeConfig)
	}
	names := make([]string, 0, len(s.CustomResources))
	for n := range s.CustomResources {
		names = append(names, n)
	}
	sort.Strings(names)
	var res []string
	for _, n := range names {
		res = append(res, n+"="+strconv.FormatInt(s.CustomResources[n], 10))
	}
	p.set("CustomResources", strings.Join(res, ","))
	setTags(p, s.Tags)
}

// setTags writes Tag.N.Key/Value in key order, so equal maps make equal
// requests (ClientToken idempotency compares them). Values go through
// model.TagValue, for tags set and tags selected by alike: a name over
// ECI's 128 characters is hashed, never cut (TagValue of a TagValue is
// itself, so a caller that already applied it is unaffected).
func setTags(p flat, tags map[string]string) {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		p[fmt.Sprintf("Tag.%d.Key", i+1)] = k
		p[fmt.Sprintf("Tag.%d.Value", i+1)] = model.TagValue(tags[k])
	}
}

// ListVirtualNodes returns every page of DescribeVirtualNodes.
func (c *Client) ListVirtualNodes(ctx context.Context, f VirtualNodeFilter) ([]VirtualNode, error) {
	if len(f.IDs) > 20 {
		return nil, &Error{Action: "DescribeVirtualNodes", Kind: KindInvalidInput, Err: fmt.Errorf("at most 20 ids per call, got %d", len(f.IDs))}
	}
	p := flat{"Limit": "20"}
	if len(f.IDs) > 0 {
		b, _ := json.Marshal(f.IDs)
		p["VirtualNodeIds"] = string(b)
	}
	p.set("VirtualNodeName", f.Name)
	p.set("Status", f.Status)
	setTags(p, f.Tags)
	var out []VirtualNode
	err := pages(ctx, c, "DescribeVirtualNodes", p, func(page *virtualNodesPage) error {
		out = append(out, page.VirtualNodes...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// virtualNodesPage is one answer of DescribeVirtualNodes.
type virtualNodesPage struct {
	NextToken    string        `json:"NextToken"`
	VirtualNodes []VirtualNode `json:"VirtualNodes"`
}

func (v *virtualNodesPage) next() string { return v.NextToken }

// DeleteVirtualNode deletes a virtual node.
func (c *Client) DeleteVirtualNode(ctx context.Context, id string) error {
	return c.call(ctx, "DeleteVirtualNode", flat{"VirtualNodeId": id}, nil)
}
