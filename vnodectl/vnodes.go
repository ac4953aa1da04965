package vnodectl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/version"
	"github.com/vnode-project/vnode/provider/nodeobject"
)

// cloud is the context in use and an ECI client for it.
type cloud struct {
	ctx    *config.Context
	client *eci.Client
}

func (g *globals) cloud() (*cloud, error) {
	c, _, _, err := g.context()
	if err != nil {
		return nil, err
	}
	logger := logrus.New()
	logger.SetOutput(g.errOut)
	logger.SetLevel(logrus.WarnLevel)
	client, err := eci.New(eci.Config{
		RegionID: c.RegionID, Endpoint: c.Endpoint, NetworkType: c.NetworkType,
		AccessKeyID: c.AccessKeyID, AccessKeySecret: c.AccessKeySecret,
		Logger: logger, VkClientVersion: "vnode-cli-" + version.Version(),
	})
	if err != nil {
		return nil, err
	}
	return &cloud{ctx: c, client: client}, nil
}

// nodeName is the Kubernetes name of virtual node id, as VNodectl names
// them: <region-id>.<id>.
func (c *cloud) nodeName(id string) string { return c.ctx.RegionID + "." + id }

func newVNodeCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newCreateCommand(g), newListCommand(g), newDescribeCommand(g), newUpdateCommand(g), newDeleteCommand(g)}
}

// mutableFlags are what create and update share.
type mutableFlags struct {
	name            string
	clusterDNS      []string
	clusterDomain   string
	customResources map[string]string
	tags            map[string]string
}

func (m *mutableFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&m.name, "name", "", "the VNode's name (2-128 lower-case letters, digits, '.' and '-')")
	f.StringSliceVar(&m.clusterDNS, "cluster-dns", nil, "cluster DNS server IPs, comma-separated (for dnsPolicy: ClusterFirst)")
	f.StringVar(&m.clusterDomain, "cluster-domain", "", "the cluster's DNS domain, e.g. cluster.local")
	f.StringToStringVar(&m.customResources, "custom-resources", nil, "extended resources in the node's capacity: name=count,...")
	f.StringToStringVar(&m.tags, "tag", nil, "tags key=value,... (on update: they replace all tags)")
}

// apply checks the flags and sets them on spec.
func (m *mutableFlags) apply(spec *eci.VirtualNodeSpec) error {
	var errs []error
	if m.name != "" {
		if msgs := validation.IsDNS1123Subdomain(m.name); len(msgs) > 0 || len(m.name) < 2 {
			errs = append(errs, fmt.Errorf("--name %q: 2-128 lower-case letters, digits, '.' and '-' (%s)", m.name, strings.Join(msgs, "; ")))
		}
		spec.Name = m.name
	}
	for _, ip := range m.clusterDNS {
		if net.ParseIP(strings.TrimSpace(ip)) == nil {
			errs = append(errs, fmt.Errorf("--cluster-dns: %q is not an IP address", ip))
		}
	}
	if len(m.clusterDNS) > 0 {
		spec.ClusterDNS = m.clusterDNS
	}
	if m.clusterDomain != "" {
		if msgs := validation.IsDNS1123Subdomain(m.clusterDomain); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", m.clusterDomain, strings.Join(msgs, "; ")))
		}
		spec.ClusterDomain = m.clusterDomain
	}
	if len(m.customResources) > 0 {
		spec.CustomResources = map[string]int64{}
		for k, v := range m.customResources {
			n, err := strconv.ParseInt(v, 10, 64)
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 || err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("--custom-resources %s=%s: want name=count with a resource name and a whole count", k, v))
				continue
			}
			spec.CustomResources[k] = n
		}
	}
	if len(m.tags) > 20 {
		errs = append(errs, fmt.Errorf("--tag: at most 20 tags, got %d", len(m.tags)))
	}
	if len(m.tags) > 0 {
		spec.Tags = m.tags
	}
	return errors.Join(errs...)
}

func newClientToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newCreateCommand(g *globals) *cobra.Command {
	m := &mutableFlags{}
	var vswitch, sg, zone, token string
	var taints []string
	var wait, inCluster bool
	var waitTimeout time.Duration
	var image string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a VNode with ECI's CreateVirtualNode from the current context of ~/.vnode/config (--in-cluster: run it in the cluster instead)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inCluster && token != "" {
				return errors.New("--client-token is CreateVirtualNode's; --in-cluster applies the node's objects, which a re-run updates, never duplicates")
			}
			if !inCluster && image != "" {
				return errors.New("--image needs --in-cluster: the cloud chooses the image of the nodes it hosts")
			}
			c, err := g.cloud()
			if err != nil {
				return err
			}
			spec, err := c.createSpec(m, vswitch, sg, zone, token, taints)
			if err != nil {
				return err
			}
			if inCluster {
				n, err := g.createInCluster(cmd.Context(), c, spec, image)
				if err != nil || !wait || g.dry {
					return err
				}
				return g.waitInClusterReady(cmd.Context(), n, waitTimeout)
			}
			if g.dry {
				shown := spec
				shown.KubeConfig = []byte("<masked>")
				out, _ := json.Marshal(shown)
				fmt.Fprintf(g.out, "would call CreateVirtualNode in %s: %s\n", c.ctx.RegionID, out)
				return nil
			}
			res, err := c.client.CreateVirtualNodeRequest(cmd.Context(), spec)
			if err != nil {
				return fmt.Errorf("creating the virtual node: %w", err)
			}
			out, _ := json.Marshal(res)
			fmt.Fprintln(g.out, string(out))
			if !wait {
				return nil
			}
			return g.waitReady(cmd.Context(), c, res.VirtualNodeID, waitTimeout)
		},
	}
	m.register(cmd)
	f := cmd.Flags()
	f.StringVar(&vswitch, "vswitch-id", "", "vSwitch ids, comma-separated (default: the context's)")
	f.StringVar(&sg, "security-group-id", "", "the security group (default: the context's)")
	f.StringVar(&zone, "zone-id", "", "the zone (default: ECI picks one of the vSwitches')")
	f.StringArrayVar(&taints, "taint", nil, "a taint key=value:Effect (repeatable; default: the context's)")
	f.StringVar(&token, "client-token", "", "makes a retried create idempotent: the same token never makes a second VNode (default: random)")
	f.BoolVar(&wait, "wait", false, "wait until the VNode's Node is Ready in the cluster, showing progress")
	f.DurationVar(&waitTimeout, "wait-timeout", 10*time.Minute, "how long --wait waits")
	f.BoolVar(&inCluster, "in-cluster", false, "run the node in this cluster (a Deployment of vnode-kubelet in "+vnodeNamespace+
		", its config context, AccessKey and kubeconfig in a Secret) instead of calling CreateVirtualNode; named by --name, the context's vnode-name, else <region-id>.in-cluster")
	f.StringVar(&image, "image", "", "with --in-cluster: the vnode-kubelet image (default: the manifests')")
	return cmd
}

// createSpec builds CreateVirtualNode's request from the context and the
// flags, reading the node's kubeconfig.
func (c *cloud) createSpec(m *mutableFlags, vswitch, sg, zone, token string, taints []string) (eci.VirtualNodeSpec, error) {
	cc := c.ctx
	spec := eci.VirtualNodeSpec{
		Name: cc.VNodeName, ZoneID: zone, VSwitchID: strings.Join(cc.VSwitchIDs, ","), SecurityGroupID: cc.SecurityGroupID,
		ResourceGroupID: cc.ResourceGroupID, Tags: cc.Tags, ClientToken: token,
	}
	if vswitch != "" {
		spec.VSwitchID = vswitch
	}
	if sg != "" {
		spec.SecurityGroupID = sg
	}
	if spec.ClientToken == "" {
		spec.ClientToken = newClientToken()
	} else if len(spec.ClientToken) > 64 {
		return spec, fmt.Errorf("--client-token: at most 64 characters")
	}
	ts := cc.Taints
	if len(taints) > 0 {
		ts = nil
		for _, s := range taints {
			t, err := config.ParseTaint(s)
			if err != nil {
				return spec, fmt.Errorf("--taint: %w", err)
			}
			ts = append(ts, t)
		}
	}
	for _, t := range ts {
		switch corev1.TaintEffect(t.Effect) {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return spec, fmt.Errorf("taint %s: effect must be NoSchedule, PreferNoSchedule or NoExecute", t)
		}
		spec.Taints = append(spec.Taints, eci.VirtualNodeTaint{Key: t.Key, Value: t.Value, Effect: t.Effect})
	}
	if err := m.apply(&spec); err != nil {
		return spec, err
	}
	path, err := cc.KubeconfigPath()
	if err != nil {
		return spec, err
	}
	data, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(data))) == 0 {
		return spec, fmt.Errorf("%w: the context's kubeconfig %s is missing or empty; run `vnode cluster setup` first", errEmptyKubeconfig, path)
	}
	kc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return spec, fmt.Errorf("the context's kubeconfig %s: %w", path, err)
	}
	spec.KubeConfig = data
	_, spec.TLSBootstrapEnabled = bootstrapTokenID(kc.BearerToken)
	return spec, nil
}

// waitReady shows the VNode's progress until its Node is Ready.
func (g *globals) waitReady(ctx context.Context, c *cloud, id string, timeout time.Duration) error {
	a, err := g.admin(ctx)
	if err != nil {
		return fmt.Errorf("--wait watches the Node in the cluster: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := c.nodeName(id)
	last := ""
	seen := map[string]bool{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		vs, err := c.client.ListVirtualNodes(ctx, eci.VirtualNodeFilter{IDs: []string{id}})
		if err == nil && len(vs) == 1 {
			v := vs[0]
			for _, ev := range v.Events {
				key := ev.LastTimestamp + ev.Reason + ev.Message
				if !seen[key] {
					seen[key] = true
					fmt.Fprintf(g.out, "  %s %s: %s\n", ev.Type, ev.Reason, ev.Message)
				}
			}
			if v.Status == "Failed" {
				return fmt.Errorf("virtual node %s failed: %s (`vnode describe %s` shows its events; `vnode delete %s` removes it)", id, failure(v), id, id)
			}
			nodeState := "not registered"
			if n, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
				nodeState = "NotReady"
				if nodeReady(n) {
					nodeState = "Ready"
				}
			}
			line := fmt.Sprintf("VNode %s: %s; Node %s: %s", id, v.Status, name, nodeState)
			if line != last {
				fmt.Fprintln(g.out, line)
				last = line
			}
			if v.Status == "Ready" && nodeState == "Ready" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Node %s to be Ready (last: %s): %w", name, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// failure is why a Failed VNode failed: its last Warning event.
func failure(v eci.VirtualNode) string {
	for i := len(v.Events) - 1; i >= 0; i-- {
		if ev := v.Events[i]; ev.Type == "Warning" {
			return ev.Reason + ": " + ev.Message
		}
	}
	return "no event says why"
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// listed is one row of `vnode list`.
type listed struct {
	eci.VirtualNode
	Schedulable string   `json:"Schedulable"`
	Zones       []string `json:"Zones"`
}

func newListCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List VNodes: VNODE ID, VNODE NAME, CREATED, STATUS, SCHEDULABLE (from the cluster's Node), ZONES",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, true); err != nil {
				return err
			}
			c, err := g.cloud()
			if err != nil {
				return err
			}
			if g.dry {
				fmt.Fprintf(g.out, "would call DescribeVirtualNodes in %s\n", c.ctx.RegionID)
				return nil
			}
			vs, err := c.client.ListVirtualNodes(cmd.Context(), eci.VirtualNodeFilter{})
			if err != nil {
				return fmt.Errorf("listing virtual nodes: %w", err)
			}
			rows := g.withNodes(cmd.Context(), c, vs)
			if output != "" {
				return printAs(g, output, rows)
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "VNODE ID\tVNODE NAME\tCREATED\tSTATUS\tSCHEDULABLE\tZONES")
			for _, r := range rows {
				zones := strings.Join(r.Zones, ",")
				if zones == "" {
					zones = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, ago(r.CreationTime), r.Status, r.Schedulable, zones)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: a table)")
	return cmd
}

// withNodes adds, from the cluster's Node of each VNode, whether it is
// schedulable and its zones; "unknown" when the cluster cannot be asked.
func (g *globals) withNodes(ctx context.Context, c *cloud, vs []eci.VirtualNode) []listed {
	a, err := g.admin(ctx)
	if err != nil {
		fmt.Fprintf(g.errOut, "SCHEDULABLE is unknown: %v\n", err)
	}
	out := make([]listed, 0, len(vs))
	for _, v := range vs {
		r := listed{VirtualNode: v, Schedulable: "unknown"}
		if a != nil {
			n, err := a.client.CoreV1().Nodes().Get(ctx, c.nodeName(v.ID), metav1.GetOptions{})
			switch {
			case err == nil:
				r.Schedulable = strconv.FormatBool(nodeReady(n) && !n.Spec.Unschedulable)
				for k := range n.Labels {
					if z, ok := strings.CutPrefix(k, nodeobject.LabelZonePrefix); ok {
						r.Zones = append(r.Zones, z)
					}
				}
				sort.Strings(r.Zones)
				if len(r.Zones) == 0 && n.Labels[corev1.LabelTopologyZone] != "" {
					r.Zones = []string{n.Labels[corev1.LabelTopologyZone]}
				}
			default:
				r.Schedulable = "false"
			}
		}
		out = append(out, r)
	}
	return out
}

// ago renders an ECI time as "2 minutes ago".
func ago(created string) string {
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		if t, err = time.Parse("2006-01-02T15:04Z", created); err != nil {
			return created
		}
	}
	d := time.Since(t)
	unit := func(n int, s string) string {
		if n == 1 {
			return "1 " + s + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, s)
	}
	switch {
	case d < time.Minute:
		return unit(max(0, int(d.Seconds())), "second")
	case d < time.Hour:
		return unit(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return unit(int(d.Hours()), "hour")
	}
	return unit(int(d.Hours()/24), "day")
}

func checkOutput(o string, tableOK bool) error {
	switch o {
	case "json", "yaml":
		return nil
	case "":
		if tableOK {
			return nil
		}
	}
	return fmt.Errorf("-o %q: want json or yaml", o)
}

func printAs(g *globals, format string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(g.out, strings.TrimRight(string(data), "\n"))
	return err
}

// find returns the VNode with id, or an error naming the region.
func (c *cloud) find(ctx context.Context, id string) (eci.VirtualNode, error) {
	if !strings.HasPrefix(id, "vnd-") {
		return eci.VirtualNode{}, fmt.Errorf("%q is not a VNode id (vnd-...)", id)
	}
	vs, err := c.client.ListVirtualNodes(ctx, eci.VirtualNodeFilter{IDs: []string{id}})
	if err != nil {
		return eci.VirtualNode{}, fmt.Errorf("describing virtual node %s: %w", id, err)
	}
	if len(vs) == 0 {
		return eci.VirtualNode{}, fmt.Errorf("virtual node %s not found in region %s", id, c.ctx.RegionID)
	}
	return vs[0], nil
}

func newDescribeCommand(g *globals) *cobra.Command {
	output := "yaml"
	cmd := &cobra.Command{
		Use:   "describe ID",
		Short: "Show one VNode with its events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, false); err != nil {
				return err
			}
			c, err := g.cloud()
			if err != nil {
				return err
			}
			if g.dry {
				fmt.Fprintf(g.out, "would call DescribeVirtualNodes in %s for %s\n", c.ctx.RegionID, args[0])
				return nil
			}
			v, err := c.find(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printAs(g, output, g.withNodes(cmd.Context(), c, []eci.VirtualNode{v})[0])
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "json or yaml")
	return cmd
}

func newUpdateCommand(g *globals) *cobra.Command {
	m := &mutableFlags{}
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a VNode's name, cluster DNS and domain, custom resources or tags",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec eci.VirtualNodeSpec
			if err := m.apply(&spec); err != nil {
				return err
			}
			if spec.Name == "" && len(spec.ClusterDNS) == 0 && spec.ClusterDomain == "" && len(spec.CustomResources) == 0 && len(spec.Tags) == 0 {
				return errors.New("nothing to update: pass --name, --cluster-dns, --cluster-domain, --custom-resources or --tag")
			}
			c, err := g.cloud()
			if err != nil {
				return err
			}
			if g.dry {
				out, _ := json.Marshal(spec)
				fmt.Fprintf(g.out, "would call UpdateVirtualNode in %s for %s: %s\n", c.ctx.RegionID, args[0], out)
				return nil
			}
			if _, err := c.find(cmd.Context(), args[0]); err != nil {
				return err
			}
			if err := c.client.UpdateVirtualNode(cmd.Context(), args[0], spec); err != nil {
				return fmt.Errorf("updating virtual node %s: %w", args[0], err)
			}
			fmt.Fprintf(g.out, "virtual node %s updated\n", args[0])
			return nil
		},
	}
	m.register(cmd)
	return cmd
}

func newDeleteCommand(g *globals) *cobra.Command {
	var inCluster bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a VNode (ECI refuses while it still runs instances: drain it first); --in-cluster NAME: an in-cluster node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if inCluster {
				return g.deleteInCluster(cmd.Context(), args[0])
			}
			c, err := g.cloud()
			if err != nil {
				return err
			}
			id := args[0]
			if g.dry {
				fmt.Fprintf(g.out, "would call DeleteVirtualNode in %s for %s\n", c.ctx.RegionID, id)
				return nil
			}
			if _, err := c.find(cmd.Context(), id); err != nil {
				return err
			}
			err = c.client.DeleteVirtualNode(cmd.Context(), id)
			if eci.KindOf(err) == eci.KindConflict {
				name := c.nodeName(id)
				return fmt.Errorf("virtual node %s still has instances, so ECI refuses to delete it: %w\n"+
					"drain it first: `kubectl cordon %s && kubectl drain %s --ignore-daemonsets --delete-emptydir-data` "+
					"(each pod's instance goes with it), then run `vnode delete %s` again", id, err, name, name, id)
			}
			if err != nil {
				return fmt.Errorf("deleting virtual node %s: %w", id, err)
			}
			fmt.Fprintf(g.out, "virtual node %s deleted\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&inCluster, "in-cluster", false, "delete the node `create --in-cluster` made, named by its Node name (refused while pods are bound to it)")
	return cmd
}
