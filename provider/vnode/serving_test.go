package vnode

import (
	"strings"
	"testing"
)

func TestCheckServing(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Settings
		want string // "" for no error
	}{
		{"files", Settings{ClientCAFile: "ca", CertFile: "c", KeyFile: "k"}, ""},
		{"rotation", Settings{ClientCAFile: "ca", RotateServerCertificates: true, CertDir: "/pki"}, ""},
		{"no client CA", Settings{CertFile: "c", KeyFile: "k"}, "client CA"},
		{"no certificate at all", Settings{ClientCAFile: "ca"}, "--rotate-server-certificates"},
		{"a certificate without its key", Settings{ClientCAFile: "ca", CertFile: "c"}, "--tls-private-key-file"},
		{"files and rotation", Settings{ClientCAFile: "ca", CertFile: "c", KeyFile: "k", RotateServerCertificates: true, CertDir: "/pki"}, "not both"},
		{"rotation without a directory", Settings{ClientCAFile: "ca", RotateServerCertificates: true}, "directory"},
	} {
		err := CheckServing(tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
