package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/config"
)

func TestServingSANsFollowTheServices(t *testing.T) {
	lb := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x-tunnel-server-svc", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20", "fd00::20"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "47.1.2.3"}, {Hostname: "tunnel.example.com"}}}}}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "edge-tunnel-server-agents", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}}}
	dns, ips := servingSANs("kube-system", "cluster.local", []string{"x-tunnel-server-svc", "edge-tunnel-server-agents"},
		[]*corev1.Service{lb, headless}, []string{"edge.example.org", "192.0.2.7"})
	for _, want := range []string{"x-tunnel-server-svc.kube-system.svc.cluster.local", "x-tunnel-server-svc.kube-system.svc",
		"edge-tunnel-server-agents.kube-system.svc.cluster.local", "tunnel.example.com", "edge.example.org"} {
		if !slices.Contains(dns, want) {
			t.Errorf("DNS SANs %v lack %s", dns, want)
		}
	}
	var got []string
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	if want := []string{"10.96.0.20", "47.1.2.3", "192.0.2.7", "fd00::20"}; !slices.Equal(got, want) {
		t.Errorf("IP SANs %v, want %v (no None, no duplicates)", got, want)
	}

	// Seed 002: the Service becomes ClusterIP; the load balancer's
	// addresses leave the certificate.
	cip := lb.DeepCopy()
	cip.Spec.Type, cip.Status = corev1.ServiceTypeClusterIP, corev1.ServiceStatus{}
	dns2, ips2 := servingSANs("kube-system", "cluster.local", []string{"x-tunnel-server-svc"}, []*corev1.Service{cip}, nil)
	if slices.Contains(dns2, "tunnel.example.com") || slices.ContainsFunc(ips2, net.ParseIP("47.1.2.3").Equal) {
		t.Errorf("after the switch to ClusterIP the SANs still name the load balancer: %v %v", dns2, ips2)
	}
}

// The provisioned certificate reaches the listeners through a file that
// certs.KeyPair reloads: written 0600, atomically, picked up at the next
// Get.
func TestServingCertFileReloads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "tls.pem")
	// Each certificate names one more DNS name: the files differ in size,
	// so certs.KeyPair's stamp (mtime, size) tells them apart even within
	// one tick of the file system's clock.
	names := []string{"x-tunnel-server-svc.kube-system.svc"}
	write := func() *x509.Certificate {
		t.Helper()
		names = append(names, fmt.Sprintf("n%d.example", len(names)))
		certPEM, keyPEM, err := certs.SelfSignedPEM("edge-tunnel-server", names...)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		data, err := keyPairPEM(&pair)
		if err != nil {
			t.Fatal(err)
		}
		if err := config.WriteSecretFile(file, data); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("serving key file mode %v, want 0600", fi.Mode().Perm())
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		return leaf
	}
	first := write()
	pair, err := certs.NewKeyPair(file, "")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := pair.Get(); !c.Leaf.Equal(first) {
		t.Fatal("the key pair does not hold the written certificate")
	}
	second := write()
	if c, _ := pair.Get(); !c.Leaf.Equal(second) {
		t.Fatal("the re-written certificate was not picked up")
	}
	if got := renewAt(second); !got.After(second.NotBefore) || !got.Before(second.NotAfter) {
		t.Fatalf("renewal at %v outside the certificate's life", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the directory holds %d files, want only tls.pem (no temporary left behind)", len(entries))
	}
}
