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
	// RotateServerCertificates requests the serving pair by CSR instead,
	// kept in CertDir (see Options).
	RotateServerCertificates bool
	CertDir                  string
	ClusterDNS               []string
	ClusterDomain            string
	KubeletVersion           string
	Version                  string
	SyncInterval, GCInterval time.Duration
	Log                      *logrus.Entry
	Ready                    chan<- struct{}
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
	if err := CheckServing(s); err != nil {
		return Options{}, err
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
		RotateServerCertificates: s.RotateServerCertificates, CertDir: s.CertDir,
		Version: s.Version, SyncInterval: s.SyncInterval, GCInterval: s.GCInterval, Log: s.Log, Ready: s.Ready,
		DescribeQuota: client.PerMinute("DescribeContainerGroups"),
	}, nil
}

// CheckServing: the kubelet API is served over TLS and authenticates its
// callers, so it needs a client CA and exactly one source of its serving
// pair: files, or a kubelet-serving CSR.
func CheckServing(s Settings) error {
	if s.ClientCAFile == "" {
		return errors.New("the kubelet API's client CA is required: it authenticates its callers")
	}
	files := s.CertFile != "" || s.KeyFile != ""
	switch {
	case files && s.RotateServerCertificates:
		return errors.New("the kubelet API's serving certificate comes either from files (--tls-cert-file, --tls-private-key-file) or from a kubelet-serving CSR (--rotate-server-certificates), not both")
	case s.RotateServerCertificates:
		if s.CertDir == "" {
			return errors.New("--rotate-server-certificates needs a certificate directory")
		}
		return nil
	case s.CertFile == "" || s.KeyFile == "":
		return errors.New("the kubelet API needs a serving certificate: give --tls-cert-file and --tls-private-key-file, or --rotate-server-certificates to request one from the cluster")
	}
	return nil
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
