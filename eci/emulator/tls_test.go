package emulator

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// httpsClient is an SDK client that trusts only the certificate in
// certFile, with verification on.
func httpsClient(t *testing.T, endpoint, certFile string) *sdkeci.Client {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", certFile)
	}
	c := sdkClient(t, endpoint, testID, testSecret)
	c.SetTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	return c
}

// With TLS the emulator serves https with a self-signed certificate made
// in the data directory (and kept across restarts), which the SDK accepts
// once it trusts it; without trusting it the SDK refuses.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir, TLS: true}
	emu, ep, stop := runEmulator(t, cfg)
	if emu.Scheme() != "https" || emu.CertFile() != filepath.Join(dir, "tls", "cert.pem") {
		t.Fatalf("scheme %s, certificate %s", emu.Scheme(), emu.CertFile())
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	c := httpsClient(t, ep, emu.CertFile())
	req := createRequest("secure", "tok-secure")
	req.Scheme = "HTTPS"
	r, err := c.CreateContainerGroup(req)
	if err != nil {
		t.Fatalf("create over https: %v", err)
	}
	if g := waitStatus(t, c, "https", r.ContainerGroupId, "Running"); g.ContainerGroupName != "secure" {
		t.Errorf("described %+v", g)
	}
	if _, err := commonCall(c, "HTTPS", "CreateVirtualNode", map[string]string{"VSwitchId": "vsw-1", "SecurityGroupId": "sg-1"}); err != nil {
		t.Errorf("CommonRequest over https: %v", err)
	}

	untrusting := sdkClient(t, ep, testID, testSecret)
	untrusting.SetTransport(&http.Transport{})
	d := sdkeci.CreateDescribeRegionsRequest()
	d.Scheme = "HTTPS"
	_, err = untrusting.DescribeRegions(d)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) && (err == nil || !strings.Contains(err.Error(), "certificate")) {
		t.Errorf("a client that does not trust the certificate got %v", err)
	}
	d.Scheme = "HTTP"
	if _, err := c.DescribeRegions(d); err == nil {
		t.Error("plain http answered on the https port")
	}

	first, _ := os.ReadFile(emu.CertFile())
	stop()
	emu2, ep2, _ := runEmulator(t, cfg)
	second, _ := os.ReadFile(emu2.CertFile())
	if !bytes.Equal(first, second) {
		t.Error("the certificate changed across a restart: clients would have to trust a new one")
	}
	if g := describeGroup(t, httpsClient(t, ep2, emu2.CertFile()), "https", r.ContainerGroupId); g == nil {
		t.Error("the group is gone after the restart")
	}
}

// A given certificate and key are served as they are; one without the
// other is refused.
func TestHTTPSWithGivenCertificate(t *testing.T) {
	made := t.TempDir()
	if _, err := setUpTLS(made, "", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(made, "tls", "cert.pem"), filepath.Join(made, "tls", "key.pem")
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", TLSCertFile: certFile, TLSKeyFile: keyFile}
	emu, ep, _ := runEmulator(t, cfg)
	if emu.Scheme() != "https" || emu.CertFile() != certFile {
		t.Fatalf("scheme %s, certificate %s", emu.Scheme(), emu.CertFile())
	}
	d := sdkeci.CreateDescribeRegionsRequest()
	d.Scheme = "HTTPS"
	if _, err := httpsClient(t, ep, certFile).DescribeRegions(d); err != nil {
		t.Fatal(err)
	}
	cfg.TLSKeyFile = ""
	if _, err := New(cfg); err == nil {
		t.Error("a certificate without its key was accepted")
	}
}
