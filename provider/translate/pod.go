package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vnode-project/vnode/eci/model"
)

// Tags every instance carries: the provider finds its instances by cluster
// and node, and their pods by UID. (ECI reserves keys starting aliyun/acs:.)
const (
	TagCluster   = "vnode.io/cluster"
	TagNode      = "vnode.io/node"
	TagNamespace = "vnode.io/namespace"
	TagPod       = "vnode.io/pod"
	TagPodUID    = "vnode.io/pod-uid"
	maxTags      = 20
)

// Pod annotations read at creation (Alibaba's documented names).
const (
	AnnotationUseSpecs        = "k8s.aliyun.com/eci-use-specs"
	AnnotationSpotStrategy    = "k8s.aliyun.com/eci-spot-strategy"
	AnnotationSpotPriceLimit  = "k8s.aliyun.com/eci-spot-price-limit"
	AnnotationVSwitch         = "k8s.aliyun.com/eci-vswitch"
	AnnotationSecurityGroup   = "k8s.aliyun.com/eci-security-group"
	AnnotationResourceGroup   = "k8s.aliyun.com/eci-resource-group-id"
	AnnotationRAMRole         = "k8s.aliyun.com/eci-ram-role-name"
	AnnotationImageCache      = "k8s.aliyun.com/eci-image-cache"
	AnnotationAutoIMC         = "k8s.aliyun.com/eci-auto-imc"
	AnnotationImageSnapshotID = "k8s.aliyun.com/eci-image-snapshot-id"
	AnnotationIMCID           = "k8s.aliyun.com/eci-imc-id"
	AnnotationWithEIP         = "k8s.aliyun.com/eci-with-eip"
	AnnotationEIPInstanceID   = "k8s.aliyun.com/eci-eip-instanceid"
	AnnotationEIPBandwidth    = "k8s.aliyun.com/eip-bandwidth"
	AnnotationNTPServer       = "k8s.aliyun.com/eci-ntp-server"
	AnnotationCustomTags      = "k8s.aliyun.com/eci-custom-tags"
)

// NodeSettings are the virtual node's defaults for every pod.
type NodeSettings struct {
	ClusterName     string
	NodeName        string
	VSwitchIDs      []string
	SecurityGroupID string
	ResourceGroupID string
	Tags            map[string]string
	ClusterDNS      []string
	ClusterDomain   string
	// AllowedAnnotations are the GuardedAnnotations every pod may set
	// (the config's allowed-pod-annotations).
	AllowedAnnotations []string
}

// Claims gives PVCs and the PVs they are bound to. Listers satisfy it.
type Claims interface {
	PersistentVolumeClaim(namespace, name string) (*corev1.PersistentVolumeClaim, error)
	PersistentVolume(name string) (*corev1.PersistentVolume, error)
}

// Sources are what a pod's translation reads besides the pod.
type Sources struct {
	Objects Objects
	Claims  Claims
	// Tokens are the pod's minted service-account tokens (TokenRequests
	// says which).
	Tokens Tokens
	// Namespaces gives the pod's namespace, whose
	// NamespaceAllowedAnnotations may allow GuardedAnnotations.
	Namespaces Namespaces
	// Note, if set, hears of configMaps and secrets the pod's env names
	// but that are missing, with virtual-kubelet's event reasons
	// (OptionalSecretNotFound, MandatoryConfigMapNotFound, ...): an
	// optional one is skipped and the pod runs, so only an event can
	// tell its owner; a mandatory one also fails the translation.
	Note func(reason, message string)
}

// ClientToken is the idempotency token of the pod's instance: the same pod
// (UID) always asks for the same instance, so a retried or repeated create
// never makes a second one.
func ClientToken(pod *corev1.Pod) string { return "vnode-" + string(pod.UID) }

// Pod translates a pod bound to the virtual node into the container group
// ECI should run. An *UnsupportedError says what in the pod to change;
// other errors are transient (an unreadable secret, an unbound claim).
func Pod(pod *corev1.Pod, node NodeSettings, src Sources) (*model.ContainerGroup, error) {
	if err := CheckSupported(pod); err != nil {
		return nil, err
	}
	if err := checkAllowed(pod, node, src.Namespaces); err != nil {
		return nil, err
	}
	a := pod.Annotations
	g := &model.ContainerGroup{
		Name:                          GroupName(pod),
		HostName:                      HostName(pod),
		RestartPolicy:                 string(pod.Spec.RestartPolicy),
		VSwitchIDs:                    node.VSwitchIDs,
		SecurityGroupID:               node.SecurityGroupID,
		ResourceGroupID:               node.ResourceGroupID,
		TerminationGracePeriodSeconds: pod.Spec.TerminationGracePeriodSeconds,
		ActiveDeadlineSeconds:         pod.Spec.ActiveDeadlineSeconds,
		HostAliases:                   pod.Spec.HostAliases,
		ClientToken:                   ClientToken(pod),
	}
	if g.RestartPolicy == "" {
		g.RestartPolicy = string(corev1.RestartPolicyAlways)
	}
	if err := applyAnnotations(g, a); err != nil {
		return nil, err
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		g.Sysctls = sc.Sysctls
	}
	var err error
	if g.Tags, err = tags(pod, node, a[AnnotationCustomTags]); err != nil {
		return nil, err
	}
	if g.Volumes, err = volumes(pod, src); err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, v := range g.Volumes {
		known[v.Name] = true
	}
	for i := range pod.Spec.InitContainers {
		c, err := container(pod, &pod.Spec.InitContainers[i], known, src.Objects, src.Note, true)
		if err != nil {
			return nil, err
		}
		g.InitContainers = append(g.InitContainers, c)
	}
	for i := range pod.Spec.Containers {
		c, err := container(pod, &pod.Spec.Containers[i], known, src.Objects, src.Note, false)
		if err != nil {
			return nil, err
		}
		g.Containers = append(g.Containers, c)
	}
	if err := size(g, pod); err != nil {
		return nil, err
	}
	if g.RegistryCredentials, err = RegistryCredentials(pod, src.Objects); err != nil {
		return nil, err
	}
	g.DNS = PodDNS(pod, node.ClusterDNS, node.ClusterDomain)
	return g, nil
}

var groupNameRE = regexp.MustCompile(`[^a-z0-9-]+`)

// HostName is the pod's hostname, as the kubelet makes it: spec.hostname,
// else the pod's name, at most 63 characters with no '-' or '.' at the end.
func HostName(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return strings.TrimRight(h, "-.")
}

// GroupName is the ECI name of the pod's instance: "<namespace>-<name>",
// lower-cased to ECI's alphabet and, past 128 characters, shortened with a
// hash so that it stays unique.
func GroupName(pod *corev1.Pod) string {
	n := groupNameRE.ReplaceAllString(strings.ToLower(pod.Namespace+"-"+pod.Name), "-")
	n = strings.Trim(n, "-")
	if len(n) > 128 {
		sum := sha256.Sum256([]byte(pod.Namespace + "/" + pod.Name))
		n = strings.TrimRight(n[:119], "-") + "-" + hex.EncodeToString(sum[:4])
	}
	if len(n) < 2 {
		n = "pod-" + n
	}
	return n
}

func tags(pod *corev1.Pod, node NodeSettings, custom string) (map[string]string, error) {
	t := map[string]string{}
	for k, v := range node.Tags {
		t[k] = v
	}
	if custom != "" {
		for _, kv := range strings.Split(custom, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), ":")
			if !ok || k == "" {
				return nil, unsupported("InvalidAnnotation", "%s: %q is not key:value[,key:value]", AnnotationCustomTags, custom)
			}
			t[k] = v
		}
	}
	// Ours last: they identify the instance and must not be overridden.
	// model.TagValue hashes a name past ECI's 128 characters; whoever
	// selects or compares by these tags must use it too.
	t[TagCluster] = model.TagValue(node.ClusterName)
	t[TagNode] = model.TagValue(node.NodeName)
	t[TagNamespace] = model.TagValue(pod.Namespace)
	t[TagPod] = model.TagValue(pod.Name)
	t[TagPodUID] = string(pod.UID)
	if len(t) > maxTags {
		return nil, unsupported("TooManyTags", "ECI allows %d tags per instance; the node config and %s add %d", maxTags, AnnotationCustomTags, len(t))
	}
	return t, nil
}

func applyAnnotations(g *model.ContainerGroup, a map[string]string) error {
	bad := func(key, format string, args ...any) error {
		return unsupported("InvalidAnnotation", "%s: %s", key, fmt.Sprintf(format, args...))
	}
	if v := a[AnnotationUseSpecs]; v != "" {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !strings.HasPrefix(s, "ecs.") {
				if _, err := parseSpec(s); err != nil {
					return bad(AnnotationUseSpecs, "%q is neither an ECS type (ecs.*) nor vCPU-memory like 2-4Gi", s)
				}
			}
			g.InstanceTypes = append(g.InstanceTypes, s)
		}
	}
	switch v := a[AnnotationSpotStrategy]; v {
	case "", "SpotAsPriceGo", "SpotWithPriceLimit":
		g.SpotStrategy = v
	default:
		return bad(AnnotationSpotStrategy, "%q: want SpotAsPriceGo or SpotWithPriceLimit", v)
	}
	if v := a[AnnotationSpotPriceLimit]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return bad(AnnotationSpotPriceLimit, "%q is not a positive price", v)
		}
		g.SpotPriceLimit = f
	}
	if g.SpotStrategy == "SpotWithPriceLimit" && g.SpotPriceLimit == 0 {
		return bad(AnnotationSpotPriceLimit, "SpotWithPriceLimit needs a price limit")
	}
	if v := a[AnnotationVSwitch]; v != "" {
		g.VSwitchIDs = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				if !strings.HasPrefix(s, "vsw-") {
					return bad(AnnotationVSwitch, "%q is not a vSwitch id", s)
				}
				g.VSwitchIDs = append(g.VSwitchIDs, s)
			}
		}
	}
	if v := a[AnnotationSecurityGroup]; v != "" {
		if !strings.HasPrefix(v, "sg-") {
			return bad(AnnotationSecurityGroup, "%q is not a security group id", v)
		}
		g.SecurityGroupID = v
	}
	if v := a[AnnotationResourceGroup]; v != "" {
		g.ResourceGroupID = v
	}
	g.RAMRoleName = a[AnnotationRAMRole]
	for _, k := range []string{AnnotationImageCache, AnnotationAutoIMC} {
		if v := a[k]; v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad(k, "%q is not true or false", v)
			}
			g.AutoMatchImageCache = g.AutoMatchImageCache || b
		}
	}
	if v := a[AnnotationIMCID]; v != "" {
		g.ImageSnapshotID = v
	} else {
		g.ImageSnapshotID = a[AnnotationImageSnapshotID]
	}
	if v := a[AnnotationWithEIP]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return bad(AnnotationWithEIP, "%q is not true or false", v)
		}
		g.AutoCreateEIP = b
	}
	g.EIPInstanceID = a[AnnotationEIPInstanceID]
	if v := a[AnnotationEIPBandwidth]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return bad(AnnotationEIPBandwidth, "%q is not a bandwidth in Mbit/s", v)
		}
		g.EIPBandwidth = n
	}
	if v := a[AnnotationNTPServer]; v != "" {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				g.NTPServers = append(g.NTPServers, s)
			}
		}
	}
	return nil
}

// parseSpec parses "2-4Gi" (vCPU-memory).
func parseSpec(s string) (model.Spec, error) {
	c, m, ok := strings.Cut(s, "-")
	if !ok {
		return model.Spec{}, fmt.Errorf("no -")
	}
	cpu, err := strconv.ParseFloat(c, 64)
	if err != nil || cpu <= 0 {
		return model.Spec{}, fmt.Errorf("bad cpu")
	}
	mem, err := strconv.ParseFloat(strings.TrimSuffix(m, "Gi"), 64)
	if err != nil || mem <= 0 {
		return model.Spec{}, fmt.Errorf("bad memory")
	}
	return model.Spec{CPU: cpu, MemoryGi: mem}, nil
}

const gpuResource = corev1.ResourceName("nvidia.com/gpu")

// size sets the instance size: the containers' requests (limits where no
// request is set) summed, init containers' maximum if larger, rounded up to
// a sold specification — unless eci-use-specs chose instance types.
func size(g *model.ContainerGroup, pod *corev1.Pod) error {
	var cpu, mem float64
	gpus := 0
	for _, c := range g.Containers {
		cpu += c.CPU
		mem += c.MemoryGi
		gpus += c.GPU
	}
	for _, c := range g.InitContainers {
		cpu, mem = max(cpu, c.CPU), max(mem, c.MemoryGi)
		gpus = max(gpus, c.GPU)
	}
	if len(g.InstanceTypes) > 0 {
		return nil
	}
	if gpus > 0 {
		return unsupported("GPUNeedsInstanceType", "the pod asks for %d nvidia.com/gpu; name a GPU instance type in the %s annotation (e.g. ecs.gn6i-c4g1.xlarge)", gpus, AnnotationUseSpecs)
	}
	if cpu == 0 && mem == 0 {
		return nil // ECI's default size (2 vCPU, 4 GiB)
	}
	s, ok := model.RoundUp(cpu, mem)
	if !ok {
		return unsupported("NoECISpec", "the pod needs %g vCPU and %g GiB; the largest ECI specification is %s: lower the requests or name an instance type in %s", roundCPU(cpu), mem, model.MaxSpec(), AnnotationUseSpecs)
	}
	g.CPU, g.MemoryGi = s.CPU, s.MemoryGi
	return nil
}

func quantityOf(c *corev1.Container, name corev1.ResourceName) resource.Quantity {
	if q, ok := c.Resources.Requests[name]; ok {
		return q
	}
	return c.Resources.Limits[name]
}

func container(pod *corev1.Pod, c *corev1.Container, volumes map[string]bool, objs Objects, note func(reason, message string), init bool) (model.Container, error) {
	env, err := ResolveEnv(pod, c, objs, note)
	if err != nil {
		return model.Container{}, fmt.Errorf("container %s: %w", c.Name, err)
	}
	out := model.Container{
		Name:            c.Name,
		Image:           c.Image,
		ImagePullPolicy: string(c.ImagePullPolicy),
		WorkingDir:      c.WorkingDir,
		Command:         c.Command,
		Args:            c.Args,
		Env:             env,
		Stdin:           c.Stdin,
		StdinOnce:       c.StdinOnce,
		TTY:             c.TTY,
	}
	cpu := quantityOf(c, corev1.ResourceCPU)
	mem := quantityOf(c, corev1.ResourceMemory)
	out.CPU = roundCPU(float64(cpu.MilliValue()) / 1000)
	out.MemoryGi = float64(mem.Value()) / (1 << 30)
	if g, ok := c.Resources.Limits[gpuResource]; ok {
		out.GPU = int(g.Value())
	}
	for _, p := range c.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		if proto == "SCTP" {
			return model.Container{}, unsupported("UnsupportedProtocol", "container %s port %d: ECI supports TCP and UDP, not SCTP", c.Name, p.ContainerPort)
		}
		out.Ports = append(out.Ports, model.Port{Port: p.ContainerPort, Protocol: proto})
	}
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			return model.Container{}, unsupported("UnknownVolume", "container %s mounts volume %q, which the pod does not define", c.Name, m.Name)
		}
		if m.SubPathExpr != "" {
			return model.Container{}, unsupported("UnsupportedVolumeMount", "container %s: subPathExpr is not supported on ECI; use subPath", c.Name)
		}
		out.VolumeMounts = append(out.VolumeMounts, model.VolumeMount{Name: m.Name, MountPath: m.MountPath, SubPath: m.SubPath, ReadOnly: m.ReadOnly})
	}
	if len(c.VolumeDevices) > 0 {
		return model.Container{}, unsupported("UnsupportedVolumeMount", "container %s uses raw block volumeDevices, which ECI does not support", c.Name)
	}
	if init && (c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil || c.Lifecycle != nil) {
		// Restartable (sidecar) init containers have them; ECI does not run sidecars.
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return model.Container{}, unsupported("SidecarNotSupported", "init container %s is a sidecar (restartPolicy: Always), which ECI does not run; make it a regular container", c.Name)
		}
	}
	if !init {
		for _, pr := range []struct {
			in  *corev1.Probe
			out **model.Probe
		}{{c.LivenessProbe, &out.LivenessProbe}, {c.ReadinessProbe, &out.ReadinessProbe}, {c.StartupProbe, &out.StartupProbe}} {
			if pr.in == nil {
				continue
			}
			h, err := handler(c, pr.in.ProbeHandler.Exec, pr.in.ProbeHandler.HTTPGet, pr.in.ProbeHandler.TCPSocket, pr.in.ProbeHandler.GRPC != nil)
			if err != nil {
				return model.Container{}, err
			}
			*pr.out = &model.Probe{Handler: h, InitialDelaySeconds: pr.in.InitialDelaySeconds, PeriodSeconds: pr.in.PeriodSeconds,
				TimeoutSeconds: pr.in.TimeoutSeconds, SuccessThreshold: pr.in.SuccessThreshold, FailureThreshold: pr.in.FailureThreshold}
		}
		if lc := c.Lifecycle; lc != nil {
			for _, hk := range []struct {
				in  *corev1.LifecycleHandler
				out **model.Handler
			}{{lc.PostStart, &out.PostStart}, {lc.PreStop, &out.PreStop}} {
				if hk.in == nil {
					continue
				}
				if hk.in.Sleep != nil {
					// A sleep hook is an exec of sleep: same effect, ECI's vocabulary.
					h := model.Handler{Exec: []string{"sleep", strconv.FormatInt(hk.in.Sleep.Seconds, 10)}}
					*hk.out = &h
					continue
				}
				h, err := handler(c, hk.in.Exec, hk.in.HTTPGet, hk.in.TCPSocket, false)
				if err != nil {
					return model.Container{}, err
				}
				*hk.out = &h
			}
		}
	}
	if sc := c.SecurityContext; sc != nil {
		s := &model.SecurityContext{RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup}
		if sc.ReadOnlyRootFilesystem != nil {
			s.ReadOnlyRootFilesystem = *sc.ReadOnlyRootFilesystem
		}
		if sc.Capabilities != nil {
			for _, cp := range sc.Capabilities.Add {
				s.AddCapabilities = append(s.AddCapabilities, string(cp))
			}
		}
		out.SecurityContext = s
	}
	return out, nil
}

func handler(c *corev1.Container, ex *corev1.ExecAction, hg *corev1.HTTPGetAction, ts *corev1.TCPSocketAction, grpc bool) (model.Handler, error) {
	switch {
	case ex != nil:
		return model.Handler{Exec: ex.Command}, nil
	case hg != nil:
		port, err := resolvePort(c, hg.Port)
		if err != nil {
			return model.Handler{}, err
		}
		scheme := string(hg.Scheme)
		if scheme == "" {
			scheme = "HTTP"
		}
		return model.Handler{HTTPGet: &model.HTTPGet{Host: hg.Host, Path: hg.Path, Port: port, Scheme: scheme, Headers: hg.HTTPHeaders}}, nil
	case ts != nil:
		port, err := resolvePort(c, ts.Port)
		if err != nil {
			return model.Handler{}, err
		}
		return model.Handler{TCPSocket: &model.TCPSocket{Host: ts.Host, Port: port}}, nil
	case grpc:
		return model.Handler{}, unsupported("UnsupportedProbe", "container %s: gRPC probes are not supported on ECI; use exec (grpc_health_probe), httpGet or tcpSocket", c.Name)
	}
	return model.Handler{}, unsupported("UnsupportedProbe", "container %s: a probe or hook names no action", c.Name)
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return int32(n), nil
	}
	return 0, unsupported("UnknownPort", "container %s has no port named %q", c.Name, p.StrVal)
}

func volumes(pod *corev1.Pod, src Sources) ([]model.Volume, error) {
	out := make([]model.Volume, 0, len(pod.Spec.Volumes))
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		vol := model.Volume{Name: v.Name}
		switch {
		case v.EmptyDir != nil:
			ed := &model.EmptyDir{Medium: string(v.EmptyDir.Medium)}
			if v.EmptyDir.SizeLimit != nil {
				ed.SizeLimit = v.EmptyDir.SizeLimit.String()
			}
			vol.EmptyDir = ed
		case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
			files, expiry, err := VolumeFiles(pod, v, src.Objects, src.Tokens)
			if err != nil {
				return nil, err
			}
			vol.ConfigFiles = &model.ConfigFiles{Files: files, DefaultMode: DefaultMode(v), TokenExpiry: expiry}
		case v.NFS != nil:
			vol.NFS = &model.NFSSource{Server: v.NFS.Server, Path: v.NFS.Path, ReadOnly: v.NFS.ReadOnly}
		case v.PersistentVolumeClaim != nil:
			ref := v.PersistentVolumeClaim
			if src.Claims == nil {
				return nil, fmt.Errorf("volume %s: no claim lister configured", v.Name)
			}
			pvc, err := src.Claims.PersistentVolumeClaim(pod.Namespace, ref.ClaimName)
			if err != nil {
				return nil, fmt.Errorf("volume %s: reading claim %s/%s: %w", v.Name, pod.Namespace, ref.ClaimName, err)
			}
			var pv *corev1.PersistentVolume
			if pvc.Spec.VolumeName != "" {
				if pv, err = src.Claims.PersistentVolume(pvc.Spec.VolumeName); err != nil {
					return nil, fmt.Errorf("volume %s: reading volume %s: %w", v.Name, pvc.Spec.VolumeName, err)
				}
			}
			c, err := ResolveClaim(v.Name, pvc, pv, ref.ReadOnly)
			if err != nil {
				return nil, err
			}
			vol.NFS, vol.Disk = c.NFS, c.Disk
		default:
			return nil, unsupported("UnsupportedVolume", "volume %s: only emptyDir, configMap, secret, downwardAPI, projected, nfs and persistentVolumeClaim (NFS/NAS or disk) volumes run on ECI", v.Name)
		}
		out = append(out, vol)
	}
	return out, nil
}
