package translate

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/eci/model"
)

// The kubelet's limits on resolv.conf.
const (
	maxNameservers = 3
	maxSearches    = 32
)

// PodDNS computes resolv.conf settings as the kubelet does for dnsPolicy
// ClusterFirst (cluster DNS with the namespace search path), Default (the
// VPC's resolver), None (dnsConfig only); dnsConfig is merged on top.
// Without a cluster DNS address ClusterFirst falls back to Default, as the
// kubelet does.
func PodDNS(pod *corev1.Pod, clusterDNS []string, clusterDomain string) model.DNS {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirstWithHostNet {
		policy = corev1.DNSClusterFirst // ECI instances have no host network
	}
	var d model.DNS
	switch policy {
	case corev1.DNSClusterFirst:
		if len(clusterDNS) == 0 {
			d.Policy = "Default"
			break
		}
		d.Policy = "None"
		d.Nameservers = append(d.Nameservers, clusterDNS...)
		if clusterDomain != "" {
			d.Searches = []string{pod.Namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
		}
		d.Options = []corev1.PodDNSConfigOption{{Name: "ndots", Value: strPtr("5")}}
	case corev1.DNSDefault:
		d.Policy = "Default"
	case corev1.DNSNone:
		d.Policy = "None"
	}
	if c := pod.Spec.DNSConfig; c != nil {
		d.Nameservers = dedupe(append(d.Nameservers, c.Nameservers...))
		d.Searches = dedupe(append(d.Searches, c.Searches...))
		d.Options = mergeOptions(d.Options, c.Options)
	}
	if len(d.Nameservers) > maxNameservers {
		d.Nameservers = d.Nameservers[:maxNameservers]
	}
	if len(d.Searches) > maxSearches {
		d.Searches = d.Searches[:maxSearches]
	}
	return d
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0:0]
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// mergeOptions lets the pod's options override defaults by name.
func mergeOptions(base, over []corev1.PodDNSConfigOption) []corev1.PodDNSConfigOption {
	out := append([]corev1.PodDNSConfigOption(nil), base...)
	for _, o := range over {
		replaced := false
		for i := range out {
			if out[i].Name == o.Name {
				out[i] = o
				replaced = true
			}
		}
		if !replaced {
			out = append(out, o)
		}
	}
	return out
}

func strPtr(s string) *string { return &s }
