package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// MetricsAuth guards /metrics as kube-rbac-proxy does: a caller is either
// a client certificate from CA, or a bearer token that the API server
// authenticates (TokenReview) and allows "get" on the non-resource URL
// /metrics (SubjectAccessReview). Metrics name every node and its traffic;
// they are not for anyone who can reach the port.
type MetricsAuth struct {
	CA     *CABundle            // nil: no client certificates
	Client kubernetes.Interface // nil: no bearer tokens
	Log    *logrus.Entry
}

// Wrap serves next to authorized callers: 401 without credentials or with
// a token the API server does not know, 403 for one it does not allow.
func (m *MetricsAuth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := m.authorize(r)
		if err != nil {
			m.log().WithFields(logrus.Fields{"remote": r.RemoteAddr, "status": code}).WithError(err).Info("metrics request refused")
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edge-tunnel-metrics"`)
			}
			http.Error(w, err.Error(), code)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (m *MetricsAuth) log() *logrus.Entry {
	if m == nil || m.Log == nil {
		return logrus.NewEntry(logrus.StandardLogger())
	}
	return m.Log
}

func (m *MetricsAuth) authorize(r *http.Request) (int, error) {
	if m == nil {
		return http.StatusUnauthorized, errors.New("metrics need authentication and none is configured")
	}
	// The TLS handshake verified any certificate against CA.
	if m.CA != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return 0, nil
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return http.StatusUnauthorized, errors.New("a client certificate or a bearer token is required")
	}
	if m.Client == nil {
		return http.StatusUnauthorized, errors.New("bearer tokens are not accepted here: use a client certificate")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	tr, err := m.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: strings.TrimSpace(tok)}}, metav1.CreateOptions{})
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("reviewing the token: %w", err)
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, errors.New("token not authenticated")
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := m.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}}}, metav1.CreateOptions{})
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("authorizing %s: %w", u.Username, err)
	}
	if !sar.Status.Allowed {
		return http.StatusForbidden, fmt.Errorf("%s may not get /metrics", u.Username)
	}
	return 0, nil
}

// MetaTLSConfig serves the meta endpoints over TLS with pair, asking for (but
// not requiring: /healthz and /readyz stay open to probes) a client
// certificate from the MetricsAuth CA.
func MetaTLSConfig(pair *KeyPair, auth *MetricsAuth) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12, // probes and scrapers may be older than the tunnel
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := pair.Get()
			if err != nil {
				return nil, err
			}
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}}
			if auth != nil && auth.CA != nil {
				pool, err := auth.CA.Pool()
				if err != nil {
					return nil, err
				}
				c.ClientCAs, c.ClientAuth = pool, tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

// SelfSignedPair is an in-memory serving certificate for a meta listener
// that has none of its own (an agent's certificate is a client
// certificate). Scrapers then authenticate with their client certificate
// and pin or skip the server's.
func SelfSignedPair(name string) (*KeyPair, error) {
	certPEM, keyPEM, err := SelfSignedPEM(name)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the self-signed pair: %w", err)
	}
	return &KeyPair{cert: &c}, nil
}

// SelfSignedPEM is a self-signed ECDSA P-256 serving certificate for
// name (and dnsNames), valid ten years, with its key, in PEM.
func SelfSignedPEM(name string, dnsNames ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: append([]string{name}, dnsNames...)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signing: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
