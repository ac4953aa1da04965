package eciprofile

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eciprofile/servingcert"
	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/integration/controlplane"
)

// TestServingCertificate: replicas starting together share one CA and
// certificate and agree on the caBundle; the certificate, and later the
// CA, are renewed before they expire, with the old CA kept in the bundle.
// The managers use eci-profile's service account, so the shipped RBAC is
// what allows (or refuses) each write.
func TestServingCertificate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(ctx, t, controlplane.Options{})
	client, err := kubernetes.NewForConfig(e.saConfig)
	if err != nil {
		t.Fatal(err)
	}
	mwcs := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := mwcs.Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/mutate")}
	}
	if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var clock struct {
		sync.Mutex
		now time.Time
	}
	clock.now = time.Now()
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	advance := func(d time.Duration) { clock.Lock(); clock.now = clock.now.Add(d); clock.Unlock() }
	newManager := func() *servingcert.Manager {
		log := logrus.New()
		log.SetOutput(tbWriter{t})
		return &servingcert.Manager{Client: client, Namespace: ownNamespace, SecretName: webhook.DefaultSecretName,
			Hosts: []string{"127.0.0.1", "eci-profile.vnode-system.svc"}, WebhookConfig: webhook.DefaultWebhookConfig,
			CertValidity: 90 * 24 * time.Hour, Log: log, Now: now}
	}
	replicas := []*servingcert.Manager{newManager(), newManager(), newManager()}
	sync := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, len(replicas))
		for i, m := range replicas {
			wg.Go(func() { errs[i] = m.Sync(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// A second round: every replica has read the Secret's final state.
		for _, m := range replicas {
			if err := m.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	state := func() (leaf *x509.Certificate, bundle []byte) {
		t.Helper()
		sec, err := e.client.CoreV1().Secrets(ownNamespace).Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(sec.Data[servingcert.KeyCert])
		if leaf, err = x509.ParseCertificate(block.Bytes); err != nil {
			t.Fatal(err)
		}
		mwc, err := mwcs.Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, sec.Data[servingcert.KeyCACert]) {
			t.Fatal("the webhook configuration's caBundle is not the Secret's CA bundle")
		}
		for i, m := range replicas {
			c, _ := m.GetCertificate(nil)
			if !bytes.Equal(c.Certificate[0], leaf.Raw) {
				t.Fatalf("replica %d serves another certificate than the Secret's", i)
			}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(sec.Data[servingcert.KeyCACert]) {
			t.Fatal("caBundle holds no certificate")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", CurrentTime: now()}); err != nil {
			t.Fatalf("the served certificate does not verify against the caBundle: %v", err)
		}
		return leaf, bytes.Clone(sec.Data[servingcert.KeyCACert])
	}
	countCerts := func(b []byte) int {
		n := 0
		for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
			n++
		}
		return n
	}

	sync()
	leaf1, bundle1 := state()
	if countCerts(bundle1) != 1 {
		t.Fatalf("a fresh bundle holds %d CAs", countCerts(bundle1))
	}

	// Two thirds of the certificate's 90 days on: renewed, same CA.
	advance(61 * 24 * time.Hour)
	sync()
	leaf2, bundle2 := state()
	if leaf2.SerialNumber.Cmp(leaf1.SerialNumber) == 0 || !bytes.Equal(bundle1, bundle2) {
		t.Fatalf("certificate not renewed (serial %v -> %v) or CA changed", leaf1.SerialNumber, leaf2.SerialNumber)
	}

	// Seven of the CA's ten years on: a new CA first in the bundle, the
	// old one still after it for replicas not yet reloaded.
	advance(7 * 365 * 24 * time.Hour)
	sync()
	_, bundle3 := state()
	if countCerts(bundle3) != 2 || !bytes.HasSuffix(bundle3, bundle1) {
		t.Fatalf("bundle after CA renewal holds %d CAs (old one kept: %t)", countCerts(bundle3), bytes.HasSuffix(bundle3, bundle1))
	}
}
