package kubeletapi

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/client-go/kubernetes"

	"github.com/vnode-project/vnode/internal/certs"
)

// ServerConfig secures the kubelet API (:10250) the way a kubelet does.
type ServerConfig struct {
	NodeName string
	// Client reviews bearer tokens (TokenReview) and authorises callers
	// (SubjectAccessReview on nodes/proxy, nodes/log, nodes/stats,
	// nodes/metrics).
	Client kubernetes.Interface
	// ClientCAFile verifies client certificates (the API server's kubelet
	// client certificate is issued by it). Reloaded when it changes.
	ClientCAFile string
	// CertFile and KeyFile are a static serving pair, reloaded when they
	// change (a pair rotated by hand takes effect without restart).
	CertFile, KeyFile string
	// GetCertificate, instead of the files, gives the pair for each
	// handshake (a kubelet-serving certificate that a certificate manager
	// renews; bootstrap.Serving). Before it has one it returns an error, and
	// the handshake fails: the API is not served without a certificate.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Anonymous admits requests without credentials as system:anonymous
	// (the kubelet's --anonymous-auth); they are still authorised by
	// SubjectAccessReview, so they get only what RBAC grants that user.
	// The API server's pods/proxy carries no identity, so a client that
	// reaches the kubelet API through the pod running vnode (as
	// virtual-kubelet's e2e suite does) needs it.
	Anonymous bool
}

// Secure wraps routes with authentication and authorisation (/healthz
// stays open for probes) and returns the TLS config to serve them with.
// The client CA and a serving pair in files are re-read when the files
// change (internal/certs, as every vnode listener does); a pair from
// GetCertificate is asked for on every handshake. Either way a renewed
// certificate takes effect without a restart.
func Secure(cfg ServerConfig, routes http.Handler) (http.Handler, *tls.Config, error) {
	ca, err := certs.NewCABundle(cfg.ClientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading client CA %s: %w", cfg.ClientCAFile, err)
	}
	getCert, err := servingCertificate(cfg)
	if err != nil {
		return nil, nil, err
	}
	auth, err := nodeutil.WebhookAuth(cfg.Client, cfg.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
		c.AuthnConfig.ClientCertificateCAContentProvider = ca
		if cfg.Anonymous {
			c.AuthnConfig.Anonymous = &apiserver.AnonymousAuthConfig{Enabled: true}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("setting up webhook authentication: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.Handle("/", nodeutil.WithAuth(auth, routes))

	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified by the x509 authenticator against the (reloadable) CA,
		// so a token caller needs no certificate and a foreign one gets 401.
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: getCert,
		CipherSuites:   nodeutil.DefaultServerCiphers(),
	}
	return mux, tlsCfg, nil
}

// servingCertificate is the GetCertificate of cfg's serving pair: the
// certificate manager's, or the files'.
func servingCertificate(cfg ServerConfig) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	hasFiles := cfg.CertFile != "" || cfg.KeyFile != ""
	switch {
	case cfg.GetCertificate != nil && hasFiles:
		return nil, errors.New("the kubelet API's serving certificate comes either from files or from a certificate manager, not both")
	case cfg.GetCertificate != nil:
		return cfg.GetCertificate, nil
	}
	serving, err := certs.NewKeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading serving certificate %s: %w", cfg.CertFile, err)
	}
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Get() }, nil
}
