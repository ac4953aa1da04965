// Command eci-profile is a mutating admission webhook that sends the pods
// its selectors match to virtual nodes (or keeps them off, or lets them
// overflow there), from the ConfigMap kube-system/eci-profile and the
// Selector resources (selectors.eci.aliyun.com/v1).
package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/internal/version"
)

func main() { cli.Execute(newCommand()) }

type options struct {
	kubeconfig       string
	kubeAPIQPS       float32
	kubeAPIBurst     int
	namespace        string
	secretName       string
	webhookConfig    string
	service          string
	certHosts        []string
	certSyncInterval time.Duration
	resync           time.Duration
	listenAddr       string
	meta             cli.MetaFlags
	clientCA         string
	logLevel         string
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:     "eci-profile",
		Version: version.String(),
		Short:   "Mutating admission webhook that places pods on virtual nodes by selectors",
		Long: `eci-profile mutates new pods that its selectors match: the ConfigMap
kube-system/eci-profile (every matching selector in order) and the Selector
resources selectors.eci.aliyun.com/v1 (one winner: highest priority, then
name). Effects are add-only: a pod's own values are never overwritten. It
keeps its CA and serving certificate in one Secret of its namespace and the
MutatingWebhookConfiguration's caBundle current. Errors admit the pod
unchanged; it never denies.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	f.Float32Var(&o.kubeAPIQPS, "kube-api-qps", 50, "API client queries per second (certificate, caBundle and events; admission itself makes no API calls)")
	f.IntVar(&o.kubeAPIBurst, "kube-api-burst", 100, "API client burst")
	f.StringVar(&o.namespace, "namespace", webhook.DefaultNamespace, "eci-profile's namespace: holds the certificate Secret and, like kube-system, is never mutated")
	f.StringVar(&o.secretName, "secret-name", webhook.DefaultSecretName, "Secret holding the CA and serving certificate (created by the first replica)")
	f.StringVar(&o.webhookConfig, "webhook-config", webhook.DefaultWebhookConfig, "MutatingWebhookConfiguration whose caBundle is kept current (empty: leave it alone)")
	f.StringVar(&o.service, "service", "eci-profile", "Service name in front of the webhook; its DNS names go into the certificate")
	f.StringSliceVar(&o.certHosts, "cert-host", nil, "extra DNS name or IP for the serving certificate (repeatable)")
	f.DurationVar(&o.certSyncInterval, "cert-sync-interval", time.Minute, "how often the Secret and caBundle are re-read and renewal checked")
	f.DurationVar(&o.resync, "resync", 10*time.Minute, "informer resync period")
	f.StringVar(&o.listenAddr, "listen-addr", ":9443", "address of the webhook (HTTPS, path "+webhook.MutatePath+")")
	o.meta.AddFlags(f, ":8081")
	f.StringVar(&o.clientCA, "client-ca-file", "", "CA bundle of the client certificate the API servers present to webhooks (their AdmissionConfiguration kubeconfig); when set, the webhook port refuses every other caller")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func run(parent context.Context, o options) error {
	ctx, stop, logger, err := cli.Start(parent, o.logLevel)
	if err != nil {
		return err
	}
	defer stop()
	restCfg, err := cli.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	hosts := append([]string(nil), o.certHosts...)
	if o.service != "" {
		svc := o.service + "." + o.namespace + ".svc"
		hosts = append(hosts, o.service, o.service+"."+o.namespace, svc, svc+".cluster.local")
	}
	for _, h := range hosts {
		if strings.TrimSpace(h) == "" {
			return fmt.Errorf("--cert-host: empty name")
		}
	}
	webhookL, err := cli.Listen(o.listenAddr, "--listen-addr")
	if err != nil {
		return err
	}
	if webhookL == nil {
		return fmt.Errorf("--listen-addr must not be empty")
	}
	meta, err := o.meta.Open()
	if err != nil {
		return err
	}
	clientCA, err := cli.CABundle(o.clientCA, "--client-ca-file")
	if err != nil {
		return err
	}
	return webhook.Run(ctx, webhook.Config{
		ClientCA: clientCA,
		REST:     restCfg, Namespace: o.namespace, SecretName: o.secretName, WebhookConfig: o.webhookConfig,
		CertHosts: hosts, CertSyncInterval: o.certSyncInterval, Resync: o.resync,
		WebhookListener: webhookL, MetricsListener: meta.Metrics, HealthListener: meta.Health,
		MetricsCert: meta.MetricsCert, MetricsClientCA: meta.MetricsClientCA, Log: logrus.NewEntry(logger),
	})
}
