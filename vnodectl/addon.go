package vnodectl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	maintainer = "vnode-project"
	repository = "https://github.com/vnode-project/vnode"
)

// addon is one installable add-on: a folder of manifests/, the Deployment
// that runs it in the cluster, and the leader-election Lease it holds when
// it runs (in or out of the cluster).
type addon struct {
	name       string
	dir        string
	namespace  string
	deployment string
	lease      string // in namespace; "" when it elects no leader
}

var addons = []addon{
	{name: "vnode-approver", dir: "approver", namespace: vnodeNamespace, deployment: "vnode-approver", lease: "vnode-approver"},
	{name: "eci-profile", dir: "eci-profile", namespace: vnodeNamespace, deployment: "eci-profile"},
	{name: "edge-tunnel", dir: "tunnel", namespace: "kube-system", deployment: "edge-tunnel-server"},
}

func findAddon(name string) (addon, error) {
	var names []string
	for _, a := range addons {
		if a.name == name {
			return a, nil
		}
		names = append(names, a.name)
	}
	return addon{}, fmt.Errorf("unknown add-on %q (have: %s)", name, strings.Join(names, ", "))
}

// objects reads the add-on's manifests, each container's image replaced
// by image when given.
func (ad addon) objects(image string) ([]*unstructured.Unstructured, error) {
	objs, err := manifestDir(ad.dir)
	if err != nil {
		return nil, fmt.Errorf("add-on %s is not available in this build (no manifests/%s)", ad.name, ad.dir)
	}
	if image == "" {
		return objs, nil
	}
	for _, u := range objs {
		containers, found, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		if !found {
			continue
		}
		for i := range containers {
			if c, ok := containers[i].(map[string]any); ok {
				c["image"] = image
			}
		}
		if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
			return nil, fmt.Errorf("setting the image of %s: %w", describe(u), err)
		}
	}
	return objs, nil
}

func newAddonCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "addon", Short: "List, enable and disable vnode's add-ons (vnode-approver, eci-profile, edge-tunnel)"}
	var image string
	enable := &cobra.Command{
		Use:   "enable NAME",
		Short: "Apply an add-on's manifests",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ad, err := findAddon(args[0])
			if err != nil {
				return err
			}
			objs, err := ad.objects(image)
			if err != nil {
				return err
			}
			a, err := g.adminUnlessDry(cmd.Context())
			if err != nil {
				return err
			}
			if err := a.applier(g).apply(cmd.Context(), objs); err != nil {
				return err
			}
			if !g.dry {
				fmt.Fprintf(g.out, "add-on %s enabled\n", ad.name)
			}
			return nil
		},
	}
	enable.Flags().StringVar(&image, "image", "", "the container image to run (default: the manifests')")
	disable := &cobra.Command{
		Use:   "disable NAME",
		Short: "Remove an add-on's objects (its namespace stays: `cluster clean` removes it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ad, err := findAddon(args[0])
			if err != nil {
				return err
			}
			objs, err := ad.objects("")
			if err != nil {
				return err
			}
			var keep []*unstructured.Unstructured
			for _, u := range objs {
				if u.GetKind() != "Namespace" {
					keep = append(keep, u)
				}
			}
			a, err := g.adminUnlessDry(cmd.Context())
			if err != nil {
				return err
			}
			if err := a.applier(g).remove(cmd.Context(), keep); err != nil {
				return err
			}
			if !g.dry {
				fmt.Fprintf(g.out, "add-on %s disabled\n", ad.name)
			}
			return nil
		},
	}
	health := map[string]string{}
	var healthCA string
	list := &cobra.Command{
		Use:   "list",
		Short: "ADDON NAME, STATUS (from the cluster), MAINTAINER, REPOSITORY",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for name := range health {
				if _, err := findAddon(name); err != nil {
					return fmt.Errorf("--health-url: %w", err)
				}
			}
			probe, err := healthClient(healthCA)
			if err != nil {
				return err
			}
			var a *admin
			if !g.dry {
				var err error
				if a, err = g.admin(cmd.Context()); err != nil {
					return err
				}
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ADDON NAME\tSTATUS\tMAINTAINER\tREPOSITORY")
			for _, ad := range addons {
				status := "unknown (--dry)"
				if a != nil {
					status = ad.status(cmd.Context(), a, probe, health[ad.name])
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ad.name, status, maintainer, repository)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringToStringVar(&health, "health-url", nil, "NAME=URL: the health endpoint of an add-on run outside the cluster")
	list.Flags().StringVar(&healthCA, "health-ca", "", "CA bundle verifying https health endpoints (default: the system's roots)")
	cmd.AddCommand(list, enable, disable)
	return cmd
}

// adminUnlessDry connects as the admin, except with --dry.
func (g *globals) adminUnlessDry(ctx context.Context) (*admin, error) {
	if g.dry {
		return nil, nil
	}
	return g.admin(ctx)
}

// status says whether the add-on runs: its Deployment available, else its
// Lease held or its health endpoint answering to probe (run outside the
// cluster; probe may be nil without a healthURL).
func (ad addon) status(ctx context.Context, a *admin, probe *http.Client, healthURL string) string {
	if _, err := manifestDir(ad.dir); err != nil {
		return "NotInThisBuild"
	}
	d, err := a.client.AppsV1().Deployments(ad.namespace).Get(ctx, ad.deployment, metav1.GetOptions{})
	switch {
	case err == nil:
		if deploymentAvailable(d) {
			return fmt.Sprintf("Running (%d/%d ready)", d.Status.ReadyReplicas, derefReplicas(d))
		}
		if holder, ok := ad.leaseHeld(ctx, a); ok {
			return "Running (Lease held by " + holder + ")"
		}
		return fmt.Sprintf("Unavailable (%d/%d ready)", d.Status.ReadyReplicas, derefReplicas(d))
	case !apierrors.IsNotFound(err):
		return "Unknown (" + err.Error() + ")"
	}
	if holder, ok := ad.leaseHeld(ctx, a); ok {
		return "Running outside the cluster (Lease held by " + holder + ")"
	}
	if healthURL != "" {
		if healthy(ctx, probe, healthURL) {
			return "Running outside the cluster (health endpoint answers)"
		}
		return "Unavailable (health endpoint does not answer)"
	}
	return "Disabled"
}

func derefReplicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == "True" && d.Status.AvailableReplicas > 0
		}
	}
	return false
}

// leaseHeld: a holder renewed the Lease within its duration.
func (ad addon) leaseHeld(ctx context.Context, a *admin) (string, bool) {
	if ad.lease == "" {
		return "", false
	}
	l, err := a.client.CoordinationV1().Leases(ad.namespace).Get(ctx, ad.lease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil {
		return "", false
	}
	d := 15 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	if time.Since(l.Spec.RenewTime.Time) > d {
		return "", false
	}
	return *l.Spec.HolderIdentity, true
}

// healthClient probes health endpoints, verifying https ones with the CA
// bundle in caFile (the system's roots if empty).
func healthClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--health-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--health-ca: %s holds no PEM certificate", caFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func healthy(ctx context.Context, probe *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := probe.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
