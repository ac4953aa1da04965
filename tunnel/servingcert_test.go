package tunnel

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/internal/certs"
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

func TestTunnelCAIssuesAServingCertificateThatReloads(t *testing.T) {
	certPEM, keyPEM, err := newTunnelCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := parseTunnelCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseTunnelCA(certPEM, mustOtherKey(t)); err == nil {
		t.Fatal("a CA Secret whose key is not the certificate's was accepted")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)

	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "tls.pem")
	// Each issue names one more DNS name: the files differ in size, so
	// certs.KeyPair's stamp (mtime, size) tells them apart even within one
	// tick of the file system's clock.
	names := []string{"x-tunnel-server-svc.kube-system.svc"}
	issue := func(ip string) {
		t.Helper()
		names = append(names, "n"+ip+".example")
		c, data, err := ca.issue(names, []net.IP{net.ParseIP(ip)}, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got := renewAt(c); got.Before(c.NotBefore) || !got.Before(c.NotAfter) {
			t.Fatalf("renewal at %v outside the certificate's life", got)
		}
		if err := writeFileAtomic(file, data); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("serving key file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	verify := func(pair *certs.KeyPair, name string) error {
		c, err := pair.Get()
		if err != nil {
			return err
		}
		_, err = c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	issue("203.0.113.1")
	pair, err := certs.NewKeyPair(file, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(pair, "203.0.113.1"); err != nil {
		t.Fatalf("the first certificate does not verify for its address: %v", err)
	}
	if verify(pair, "203.0.113.2") == nil {
		t.Fatal("the first certificate verifies for an address it does not name")
	}
	issue("203.0.113.2")
	if err := verify(pair, "203.0.113.2"); err != nil {
		t.Fatalf("the re-issued certificate was not picked up: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the directory holds %d files, want only tls.pem (no temporary left behind)", len(entries))
	}
}

func mustOtherKey(t *testing.T) []byte {
	_, k, err := newTunnelCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}
