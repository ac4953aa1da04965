// Package bootstrap gives a virtual node its client identity by TLS
// bootstrap: starting from a bootstrap-token kubeconfig it generates a key,
// asks for a certificate for system:vnode:<node> (group system:vnodes) from
// the kubernetes.io/kube-apiserver-client signer, waits for vnode-approver
// and the signer, stores the pair (0600) and a kubeconfig that uses it
// (0600), and renews the certificate as itself before it expires. A restart
// reuses a valid certificate. The CSR, key and rotation logic are client-go's
// certificate manager, the kubelet's own.
package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	certificatesv1 "k8s.io/api/certificates/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/connrotation"

	"github.com/vnode-project/vnode/internal/identity"
)

// Identity of virtual nodes.
const (
	SignerName = certificatesv1.KubeAPIServerClientSignerName
	pairName   = "vnode-client"
)

// Config says where credentials come from and go.
type Config struct {
	NodeName string
	// BootstrapKubeconfig authenticates with a bootstrap token; it is read
	// only when no valid certificate is stored.
	BootstrapKubeconfig string
	// CertDir keeps the key and certificate pairs (created 0700).
	CertDir string
	// KubeconfigPath is written (0600) to use the current pair.
	KubeconfigPath string
	// Lifetime requests expirationSeconds on the CSR (0: the signer's).
	Lifetime time.Duration
	Log      logrus.FieldLogger
}

// Client is a virtual node's rotating client identity.
type Client struct {
	manager certificate.Manager
	config  *rest.Config
	conns   *connrotation.ConnectionTracker
	stop    chan struct{}
	once    sync.Once
}

// Start obtains (or reuses) a certificate and returns once one is current.
// The returned client keeps renewing until Stop.
func Start(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.NodeName == "" || cfg.CertDir == "" || cfg.KubeconfigPath == "" {
		return nil, errors.New("bootstrap: NodeName, CertDir and KubeconfigPath are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	log := cfg.Log.WithField("node", cfg.NodeName)

	// The server and CA come from the bootstrap kubeconfig, or, on a
	// restart without it, from the kubeconfig written last time.
	base, err := serverConfig(cfg)
	if err != nil {
		return nil, err
	}

	c := &Client{conns: connrotation.NewConnectionTracker(), stop: make(chan struct{})}
	c.config, err = rotatingConfig(base, c)
	if err != nil {
		return nil, err
	}

	var lifetime *time.Duration
	if cfg.Lifetime > 0 {
		lifetime = &cfg.Lifetime
	}
	var store certificate.FileStore
	c.manager, store, err = newManager(cfg.CertDir, &certificate.Config{
		Name: pairName,
		ClientsetFn: func(current *tls.Certificate) (kubernetes.Interface, error) {
			if current == nil {
				// No valid certificate: ask with the bootstrap token.
				if cfg.BootstrapKubeconfig == "" {
					return nil, errors.New("no valid client certificate is stored and no bootstrap kubeconfig was given")
				}
				boot, err := clientcmd.BuildConfigFromFlags("", cfg.BootstrapKubeconfig)
				if err != nil {
					return nil, fmt.Errorf("loading bootstrap kubeconfig: %w", err)
				}
				return kubernetes.NewForConfig(boot)
			}
			// Renewal is requested as the node itself.
			return kubernetes.NewForConfig(c.config)
		},
		Template: &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: identity.VNodeUserPrefix + cfg.NodeName, Organization: []string{identity.VNodesGroup}},
		},
		SignerName:                   SignerName,
		Usages:                       []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		RequestedCertificateLifetime: lifetime,
	})
	if err != nil {
		return nil, err
	}
	c.manager.Start()
	go c.closeConnsOnRotation(log)

	if c.manager.Current() == nil {
		log.Info("no valid client certificate; requesting one with the bootstrap token")
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for c.manager.Current() == nil {
		select {
		case <-ctx.Done():
			c.Stop()
			return nil, fmt.Errorf("waiting for the client certificate to be approved and signed: %w", ctx.Err())
		case <-t.C:
		}
	}
	if err := writeKubeconfig(cfg.KubeconfigPath, base, store.CurrentPath(), cfg.NodeName); err != nil {
		c.Stop()
		return nil, err
	}
	log.WithField("notAfter", c.Certificate().NotAfter).Info("client certificate ready")
	return c, nil
}

// newManager is client-go's certificate manager for cfg with its pair kept
// in certDir (created 0700; the pair files are 0600) as cfg.Name: the one
// mechanism behind the node's client and serving certificates.
func newManager(certDir string, cfg *certificate.Config) (certificate.Manager, certificate.FileStore, error) {
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating certificate directory %s: %w", certDir, err)
	}
	store, err := certificate.NewFileStore(cfg.Name, certDir, certDir, "", "")
	if err != nil {
		return nil, nil, fmt.Errorf("opening certificate store %s: %w", certDir, err)
	}
	cfg.CertificateStore = store
	m, err := certificate.NewManager(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the %s certificate manager: %w", cfg.Name, err)
	}
	return m, store, nil
}

// RESTConfig authenticates with the current certificate, picking up renewals.
func (c *Client) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Certificate is the current leaf certificate.
func (c *Client) Certificate() *x509.Certificate {
	cur := c.manager.Current()
	if cur == nil {
		return nil
	}
	return cur.Leaf
}

// Stop ends rotation.
func (c *Client) Stop() {
	c.once.Do(func() {
		close(c.stop)
		c.manager.Stop()
	})
}

// closeConnsOnRotation drops connections made with an old certificate so
// the next request handshakes with the new one.
func (c *Client) closeConnsOnRotation(log logrus.FieldLogger) {
	onRotation(c.stop, c.Certificate, func(cur, last *x509.Certificate) {
		if last != nil {
			log.WithField("notAfter", cur.NotAfter).Info("client certificate renewed; reconnecting with it")
			c.conns.CloseAll()
		}
	})
}

// onRotation calls f with each new certificate current returns (last is
// nil the first time) until stop closes. The certificate manager has no
// notification of its own, so it polls each second.
func onRotation(stop <-chan struct{}, current func() *x509.Certificate, f func(cur, last *x509.Certificate)) {
	var last *x509.Certificate
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		cur := current()
		if cur == nil || (last != nil && cur.Equal(last)) {
			continue
		}
		f(cur, last)
		last = cur
	}
}

func serverConfig(cfg Config) (*rest.Config, error) {
	path := cfg.BootstrapKubeconfig
	if path == "" {
		path = cfg.KubeconfigPath
	}
	if _, err := os.Stat(path); err != nil {
		if cfg.BootstrapKubeconfig == "" {
			return nil, fmt.Errorf("no bootstrap kubeconfig given and no kubeconfig at %s from an earlier start", cfg.KubeconfigPath)
		}
		return nil, fmt.Errorf("reading bootstrap kubeconfig: %w", err)
	}
	kc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	// Only the server and its CA: credentials come from the certificate.
	return &rest.Config{
		Host:            kc.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: kc.CAData, CAFile: kc.CAFile, ServerName: kc.ServerName},
		QPS:             kc.QPS,
		Burst:           kc.Burst,
	}, nil
}

// rotatingConfig is base with a transport that presents the certificate
// manager's current certificate on every handshake.
func rotatingConfig(base *rest.Config, c *Client) (*rest.Config, error) {
	tlsCfg, err := rest.TLSConfigFor(base)
	if err != nil {
		return nil, fmt.Errorf("building TLS config: %w", err)
	}
	if tlsCfg == nil {
		return nil, fmt.Errorf("the API server %s is not https; refusing to send a client certificate in the clear", base.Host)
	}
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cur := c.manager.Current(); cur != nil {
			return cur, nil
		}
		// An empty certificate: the server answers 401 and the caller retries.
		return &tls.Certificate{}, nil
	}
	dialer := connrotation.NewDialerWithTracker((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext, c.conns)
	cfg := &rest.Config{
		Host:      base.Host,
		QPS:       base.QPS,
		Burst:     base.Burst,
		Transport: utilnet.SetTransportDefaults(&http.Transport{TLSClientConfig: tlsCfg, DialContext: dialer.DialContext, MaxIdleConnsPerHost: 25}),
	}
	return cfg, nil
}

func writeKubeconfig(path string, base *rest.Config, pairPath, node string) error {
	ca := base.CAData
	if len(ca) == 0 && base.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(base.CAFile); err != nil {
			return fmt.Errorf("reading CA %s: %w", base.CAFile, err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["default"] = &clientcmdapi.Cluster{Server: base.Host, CertificateAuthorityData: ca, TLSServerName: base.ServerName}
	kc.AuthInfos[identity.VNodeUserPrefix+node] = &clientcmdapi.AuthInfo{ClientCertificate: pairPath, ClientKey: pairPath}
	kc.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: identity.VNodeUserPrefix + node}
	kc.CurrentContext = "default"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("encoding kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
