package tunnel

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		http    []int
		https   []int
		local   []int
		wantErr bool
	}{
		{name: "defaults", local: []int{10250, 10255, 10266, 10267}},
		{name: "lists", data: map[string]string{KeyHTTPProxyPorts: "9100, 9445", KeyHTTPSProxyPorts: "9443", KeyLocalhostPorts: "10266"},
			http: []int{9100, 9445}, https: []int{9443}, local: []int{10266}},
		{name: "empty localhost list", data: map[string]string{KeyLocalhostPorts: ""}},
		{name: "dnat pairs", data: map[string]string{KeyDNATPortsPair: "9051=10264, 9052=10264", KeyLocalhostPorts: ""}, http: []int{9051, 9052}},
		{name: "dnat right side", data: map[string]string{KeyDNATPortsPair: "9051=10263"}, wantErr: true},
		{name: "dnat no pair", data: map[string]string{KeyDNATPortsPair: "9051"}, wantErr: true},
		{name: "not a number", data: map[string]string{KeyHTTPProxyPorts: "http"}, wantErr: true},
		{name: "out of range", data: map[string]string{KeyHTTPSProxyPorts: "70000"}, wantErr: true},
		{name: "both http and https", data: map[string]string{KeyHTTPProxyPorts: "9100", KeyHTTPSProxyPorts: "9100"}, wantErr: true},
		{name: "both https and localhost", data: map[string]string{KeyHTTPSProxyPorts: "10250", KeyLocalhostPorts: "10250, 10266"}, wantErr: true},
		{name: "both http and localhost", data: map[string]string{KeyHTTPProxyPorts: "9100", KeyLocalhostPorts: "9100"}, wantErr: true},
		{name: "both dnat and https", data: map[string]string{KeyDNATPortsPair: "9443=10264", KeyHTTPSProxyPorts: "9443"}, wantErr: true},
		{name: "both dnat and http", data: map[string]string{KeyDNATPortsPair: "9100=10264", KeyHTTPProxyPorts: "9100"}, wantErr: true},
		// The default localhost list is not the admin's: an https port it
		// also holds is no clash.
		{name: "https and the default localhost", data: map[string]string{KeyHTTPSProxyPorts: "10250"},
			https: []int{10250}, local: []int{10250, 10255, 10266, 10267}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePorts(tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if !slices.Equal(p.HTTP, tc.http) || !slices.Equal(p.HTTPS, tc.https) || !slices.Equal(p.Localhost, tc.local) {
				t.Fatalf("got %s", p)
			}
		})
	}
}

func TestPortClass(t *testing.T) {
	p, err := ParsePorts(map[string]string{KeyHTTPProxyPorts: "9100", KeyHTTPSProxyPorts: "9443", KeyLocalhostPorts: "10266"})
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[int]PortClass{9100: PortHTTP, 9443: PortNode, 10266: PortLocalhost, 10250: PortNode, 10255: PortNode, 22: PortRefused, 2379: PortRefused} {
		if got := p.Class(port, 0); got != want {
			t.Errorf("port %d: class %d, want %d", port, got, want)
		}
	}
	if p.Class(11250, 11250) != PortNode {
		t.Error("a node's own kubelet port is not proxied")
	}
}

func TestPortConfigBadValueKeepsLastGood(t *testing.T) {
	pol, pc, reported := newTestPortConfig(t)
	if err := pc.Apply(portCM("1", map[string]string{KeyHTTPProxyPorts: "9100"})); err != nil {
		t.Fatal(err)
	}
	if pol.Get().Class(9100, 0) != PortHTTP {
		t.Fatal("good configuration not applied")
	}
	err := pc.Apply(portCM("2", map[string]string{KeyHTTPProxyPorts: "9100,nine"}))
	if err == nil || len(*reported) != 1 || !errors.Is((*reported)[0], err) && (*reported)[0].Error() != err.Error() {
		t.Fatalf("bad configuration: err %v, reported %v", err, *reported)
	}
	if pol.Get().Class(9100, 0) != PortHTTP {
		t.Fatal("a bad configuration dropped the last good one")
	}
	// The same bad version seen again (a resync) is not reported twice.
	_ = pc.Apply(portCM("2", map[string]string{KeyHTTPProxyPorts: "9100,nine"}))
	if len(*reported) != 1 {
		t.Fatalf("reported %d times", len(*reported))
	}
	if err := pc.Apply(nil); err != nil || pol.Get().Class(9100, 0) != PortRefused || pol.Get().Class(10266, 0) != PortLocalhost {
		t.Fatalf("deleting the ConfigMap: %v, policy %s", err, pol.Get())
	}
}

// A port in two keys (https-proxy-ports and localhost-proxy-ports: which
// one wins was Class's order, silently) is refused, naming the port and
// both keys, and the last good configuration stays in force.
func TestPortConfigOverlapKeepsLastGood(t *testing.T) {
	pol, pc, reported := newTestPortConfig(t)
	if err := pc.Apply(portCM("1", map[string]string{KeyHTTPSProxyPorts: "9443", KeyLocalhostPorts: "10266"})); err != nil {
		t.Fatal(err)
	}
	err := pc.Apply(portCM("2", map[string]string{KeyHTTPSProxyPorts: "9443", KeyLocalhostPorts: "10266, 9443"}))
	if err == nil || len(*reported) != 1 {
		t.Fatalf("overlap accepted: err %v, reported %v", err, *reported)
	}
	for _, want := range []string{"9443", KeyHTTPSProxyPorts, KeyLocalhostPorts} {
		if !strings.Contains((*reported)[0].Error(), want) {
			t.Errorf("report %q does not name %s", (*reported)[0], want)
		}
	}
	if got := pol.Get(); got.Class(9443, 0) != PortNode || !slices.Equal(got.Localhost, []int{10266}) {
		t.Fatalf("the overlap replaced the last good configuration: %s", got)
	}
}

// newTestPortConfig is a PortConfig on the default ports that collects
// what it reports.
func newTestPortConfig(t *testing.T) (*PortPolicy, *PortConfig, *[]error) {
	pol := NewPortPolicy(DefaultPorts())
	var reported []error
	pc := &PortConfig{Policy: pol, Log: testLog(t), Report: func(_ *corev1.ConfigMap, err error) { reported = append(reported, err) }}
	return pol, pc, &reported
}

// portCM is version rv of the port ConfigMap.
func portCM(rv string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ConfigMapNamespace, Name: ConfigMapName, ResourceVersion: rv}, Data: data}
}
