package tunnel

import (
	"crypto/tls"
	"fmt"

	"github.com/vnode-project/vnode/internal/certs"
)

// ALPN protocol of the agent session.
const alpnProtocol = "vnode-tunnel/1"

// serverTLS is a TLS 1.3 server configuration that checks client
// certificates against ca (auth says whether one is required) and picks up
// new files on every handshake.
func serverTLS(pair *certs.KeyPair, ca *certs.CABundle, protos []string, auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := pair.Get()
			if err != nil {
				return nil, err
			}
			pool, err := ca.Pool()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    pool,
				ClientAuth:   auth,
				NextProtos:   protos,
			}, nil
		},
	}
}

// clientTLS is a TLS 1.3 client configuration for one dial: the current CA
// and client certificate, server name verified (never skipped: an empty
// name is an error rather than a silent InsecureSkipVerify-like default).
func clientTLS(pair *certs.KeyPair, ca *certs.CABundle, serverName string) (*tls.Config, error) {
	if serverName == "" {
		return nil, fmt.Errorf("no server name to verify the tunnel server against")
	}
	pool, err := ca.Pool()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: serverName,
		NextProtos: []string{alpnReplicas, alpnProtocol},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pair.Get()
		},
	}, nil
}
