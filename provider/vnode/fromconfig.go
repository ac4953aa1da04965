package vnode

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/translate"
)

// Settings are what a context of the config file does not say.
type Settings struct {
	NodeName    string // default: vnode-name, else <region>.<virtual-node-id>
	ClusterName string // default: the API server's host
	Kube        *rest.Config
	Listener    net.Listener
	NodeIP      string // default: the first global unicast address
	// ClientCAFile, CertFile, KeyFile secure the kubelet API.
	ClientCAFile, CertFile, KeyFile string
	ClusterDNS                      []string
	ClusterDomain                   string
	KubeletVersion                  string
	Version                         string
	SyncInterval, GCInterval        time.Duration
	Log                             *logrus.Entry
	Ready                           chan<- struct{}
	// ECIRateLimits are the client's calls per minute by ECI action
	// (eci.Config.RateLimits); nil keeps ECI's published quotas.
	ECIRateLimits map[string]int
}

// NodeName is the node's name: override, else the context's vnode-name,
// else <region-id>.<virtual-node-id> as VNodectl names nodes.
func NodeName(cc *config.Context, override string) (string, error) {
	switch {
	case override != "":
		return override, nil
	case cc.VNodeName != "":
		return cc.VNodeName, nil
	case cc.VirtualNodeID != "":
		return cc.RegionID + "." + cc.VirtualNodeID, nil
	}
	return "", errors.New("no node name: set --nodename, or vnode-name (or virtual-node-id) in the context")
}

// FromContext builds Options from a validated config context: the ECI
// client for its region and endpoint (the cloud's, or the emulator's), the
// node's labels, taints and capacity, and the pods' placement.
func FromContext(cc *config.Context, s Settings) (Options, error) {
	for name, v := range map[string]string{"client CA": s.ClientCAFile, "serving certificate": s.CertFile, "serving key": s.KeyFile} {
		if v == "" {
			return Options{}, fmt.Errorf("the kubelet API's %s is required: it is served over TLS and authenticates its callers", name)
		}
	}
	name, err := NodeName(cc, s.NodeName)
	if err != nil {
		return Options{}, err
	}
	cluster := s.ClusterName
	if cluster == "" {
		cluster = strings.TrimPrefix(strings.TrimPrefix(s.Kube.Host, "https://"), "http://")
	}
	if s.Log == nil {
		s.Log = logrus.NewEntry(logrus.New())
	}
	client, err := eci.New(eci.Config{
		RegionID: cc.RegionID, Endpoint: cc.Endpoint, NetworkType: cc.NetworkType,
		AccessKeyID: cc.AccessKeyID, AccessKeySecret: cc.AccessKeySecret,
		Logger: s.Log, VkClientVersion: "vnode-" + s.Version, RateLimits: s.ECIRateLimits,
	})
	if err != nil {
		return Options{}, err
	}
	ip := s.NodeIP
	if ip == "" {
		if ip, err = firstAddress(); err != nil {
			return Options{}, err
		}
	}
	capacity, err := cc.ResourceList()
	if err != nil {
		return Options{}, err
	}
	if err := translate.CheckAllowList(cc.AllowedPodAnnotations); err != nil {
		return Options{}, fmt.Errorf("context %q: %w", cc.Name, err)
	}
	var taints []corev1.Taint
	for _, t := range cc.Taints {
		taints = append(taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	return Options{
		NodeName: name,
		Node: nodeobject.Config{
			Name: name, Region: cc.RegionID, Zones: cc.ZoneIDs, VirtualNodeID: cc.VirtualNodeID, Taints: taints,
			Capacity: capacity, InternalIP: ip, KubeletPort: int32(s.Listener.Addr().(*net.TCPAddr).Port), KubeletVersion: s.KubeletVersion,
		},
		Pods: translate.NodeSettings{
			ClusterName: cluster, NodeName: name, VSwitchIDs: cc.VSwitchIDs, SecurityGroupID: cc.SecurityGroupID,
			ResourceGroupID: cc.ResourceGroupID, Tags: cc.Tags, ClusterDNS: s.ClusterDNS, ClusterDomain: s.ClusterDomain,
			AllowedAnnotations: cc.AllowedPodAnnotations,
		},
		Cloud: client, Checker: client, Kube: s.Kube, Listener: s.Listener,
		ClientCAFile: s.ClientCAFile, CertFile: s.CertFile, KeyFile: s.KeyFile,
		Version: s.Version, SyncInterval: s.SyncInterval, GCInterval: s.GCInterval, Log: s.Log, Ready: s.Ready,
	}, nil
}

func firstAddress() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("finding the node address (set the node IP): %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback address found: set the node IP")
}
