package vnode

import (
	"net"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/internal/config"
)

// The node's full list keeps to a share of the DescribeContainerGroups
// quota its ECI client keeps to: ECI's published 2,000 a minute, or what
// --eci-rate-limits says, and none when the limit is lifted.
func TestDescribeQuotaFollowsTheClientsLimit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cc := &config.Context{Name: "t", RegionID: "cn-hangzhou", Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", AccessKeySecret: "b", VNodeName: "vn"}
	for _, tc := range []struct {
		limits map[string]int
		want   int
	}{
		{nil, 2000},
		{map[string]int{"DescribeContainerGroups": 500}, 500},
		{map[string]int{"DescribeContainerGroups": -1}, 0},
	} {
		o, err := FromContext(cc, Settings{Kube: &rest.Config{Host: "https://127.0.0.1:6443"}, Listener: l, NodeIP: "127.0.0.1",
			ClientCAFile: "ca.crt", CertFile: "tls.crt", KeyFile: "tls.key", ECIRateLimits: tc.limits})
		if err != nil {
			t.Fatal(err)
		}
		if o.DescribeQuota != tc.want {
			t.Errorf("limits %v: DescribeQuota %d, want %d", tc.limits, o.DescribeQuota, tc.want)
		}
	}
}
