package eci

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/model"
)

// Values a pod takes from Secrets: an env var, a secret volume's file and
// a registry password. Plain letters and digits, so every encoding of a
// string to sign quotes them as they are.
const (
	envSecret      = "EnvFromSecretVa1ue7731"
	fileSecret     = "FileFromSecretContent4410"
	registrySecret = "RegistryPassw0rd5562"
)

func secretGroup() *model.ContainerGroup {
	g := group("leaky", "tok-leaky", "/bin/true")
	g.Containers[0].Env = []model.EnvVar{{Name: "DB_PASSWORD", Value: envSecret}}
	g.Volumes = []model.Volume{{Name: "creds", ConfigFiles: &model.ConfigFiles{Files: []model.File{{Path: "key", Content: []byte(fileSecret)}}}}}
	g.Containers[0].VolumeMounts = []model.VolumeMount{{Name: "creds", MountPath: "/creds"}}
	g.RegistryCredentials = []model.RegistryCredential{{Server: "registry.example.com", UserName: "robot", Password: registrySecret}}
	return g
}

func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range []string{envSecret, fileSecret, base64.StdEncoding.EncodeToString([]byte(fileSecret)), registrySecret} {
		if strings.Contains(text, s) {
			t.Errorf("%s quotes the secret %q:\n%s", what, s, text)
		}
	}
}

// The attack of issue 12 item 3: with a wrong AccessKey secret, ECI's
// SignatureDoesNotMatch message quotes the whole string it signed, secret
// values and all; the error the provider turns into a Warning event and a
// log line must carry the code and the request id, not those values.
func TestSignatureMismatchDoesNotLeakSecrets(t *testing.T) {
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim"})
	// The premise: ECI's (the emulator's) answer does quote the request.
	q := url.Values{"Action": {"CreateContainerGroup"}, "AccessKeyId": {id}, "Signature": {"bad"}, "SignatureNonce": {"n-premise"},
		"Timestamp": {time.Now().UTC().Format("2006-01-02T15:04:05Z")}, "SignatureMethod": {"HMAC-SHA1"}, "SignatureVersion": {"1.0"},
		"Version": {Version}, "Format": {"JSON"}, "Container.1.EnvironmentVar.1.Value": {envSecret}}
	resp, err := http.Post("http://"+ep+"/?"+q.Encode(), "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "SignatureDoesNotMatch") || !strings.Contains(string(body), envSecret) {
		t.Fatalf("the emulator's SignatureDoesNotMatch does not quote the string to sign as ECI does: %s", body)
	}

	c := newClient(t, ep, func(cfg *Config) { cfg.AccessKeySecret = "wrong-secret" })
	_, _, err = c.CreateContainerGroup(context.Background(), secretGroup())
	if err == nil {
		t.Fatal("a wrong secret was accepted")
	}
	var e *Error
	if !asError(err, &e) || e.Code != "SignatureDoesNotMatch" || e.RequestID == "" || e.Kind != KindAuth {
		t.Fatalf("error %#v", err)
	}
	text := err.Error()
	if !strings.Contains(text, "SignatureDoesNotMatch") || !strings.Contains(text, e.RequestID) {
		t.Errorf("the error lacks its code or request id: %s", text)
	}
	assertNoSecrets(t, "Error()", text)
	assertNoSecrets(t, "Message", e.Message)
	for u := error(e); u != nil; u = unwrapOne(u) {
		assertNoSecrets(t, "a wrapped error", u.Error())
	}
	if !strings.Contains(text, redactedText) {
		t.Errorf("the message does not say what was removed: %s", text)
	}
}

// A transport error (the endpoint does not answer) quotes the request URL
// in net/http's error; its query carries the same values.
func TestTransportErrorDoesNotLeakSecrets(t *testing.T) {
	c := newClient(t, "127.0.0.1:1", func(cfg *Config) { cfg.Retry.Attempts = 1 })
	_, _, err := c.CreateContainerGroup(context.Background(), secretGroup())
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if KindOf(err) != KindTransport {
		t.Errorf("kind %v: %v", KindOf(err), err)
	}
	assertNoSecrets(t, "Error()", err.Error())
	for u := err; u != nil; u = unwrapOne(u) {
		assertNoSecrets(t, "a wrapped error", u.Error())
	}
}

func TestRedactKeepsIdentifyingNames(t *testing.T) {
	p := map[string]string{"ContainerGroupId": "eci-abc123", "Container.1.EnvironmentVar.1.Value": "hunter2-secret", "Container.1.Name": "app-main", "Limit": "20"}
	got := redact(`The specified container group "eci-abc123" (container app-main) is not found; value hunter2-secret, limit 20`, p)
	if !strings.Contains(got, "eci-abc123") || !strings.Contains(got, "app-main") || !strings.Contains(got, "limit 20") || strings.Contains(got, "hunter2-secret") {
		t.Errorf("redacted: %s", got)
	}
	got = redact("Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3Dx", nil)
	if got != "Specified signature is not matched with our calculation. server string to sign is: "+redactedText {
		t.Errorf("redacted: %s", got)
	}
}

func asError(err error, target **Error) bool {
	for u := err; u != nil; u = unwrapOne(u) {
		if e, ok := u.(*Error); ok {
			*target = e
			return true
		}
	}
	return false
}

func unwrapOne(err error) error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap()
	case interface{ Unwrap() []error }:
		if es := u.Unwrap(); len(es) > 0 {
			return es[0]
		}
	}
	return nil
}
