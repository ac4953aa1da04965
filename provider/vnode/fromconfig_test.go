package vnode

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
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

// The node's clients send and ask for protobuf (JSON only as the server's
// fallback), as kubelet's do, in the calls client-go's generated methods
// leave to the config: the event sink's CreateWithEventNamespace (and the
// token requests) went as JSON. The config they were made from is
// unchanged.
func TestProtobufClient(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL}
	kube, err := kubernetes.NewForConfig(Protobuf(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns"}}
	_, _ = kube.CoreV1().Events("ns").CreateWithEventNamespaceWithContext(context.Background(), ev) // as record's sink
	h := <-got
	if ct := h.Get("Content-Type"); ct != runtime.ContentTypeProtobuf {
		t.Errorf("Content-Type %q, want protobuf", ct)
	}
	if a := h.Get("Accept"); !strings.HasPrefix(a, runtime.ContentTypeProtobuf+",") || !strings.Contains(a, runtime.ContentTypeJSON) {
		t.Errorf("Accept %q, want protobuf, then JSON", a)
	}
	if cfg.ContentType != "" || cfg.AcceptContentTypes != "" {
		t.Errorf("the given config was changed: %q, %q", cfg.ContentType, cfg.AcceptContentTypes)
	}
}
