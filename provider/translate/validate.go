package translate

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/eci/model"
)

// MaxContainers is ECI's limit of containers per instance (init included
// separately by ECI; both are checked).
const MaxContainers = 20

// CheckSupported refuses pods ECI cannot run, saying what to change. It
// looks only at the pod; volumes are checked when they are translated.
func CheckSupported(pod *corev1.Pod) error {
	s := &pod.Spec
	if s.HostNetwork {
		return unsupported("HostNetworkNotSupported", "hostNetwork is not available on ECI (each instance has its own network); remove hostNetwork: true or schedule the pod on a real node")
	}
	if s.HostPID || s.HostIPC {
		return unsupported("HostNamespaceNotSupported", "hostPID/hostIPC are not available on ECI; remove them or schedule the pod on a real node")
	}
	if n := len(s.Containers); n > MaxContainers {
		return unsupported("TooManyContainers", "ECI runs at most %d containers per instance, the pod has %d", MaxContainers, n)
	}
	if n := len(s.InitContainers); n > MaxContainers {
		return unsupported("TooManyContainers", "ECI runs at most %d init containers per instance, the pod has %d", MaxContainers, n)
	}
	if len(s.EphemeralContainers) > 0 {
		return unsupported("EphemeralContainersNotSupported", "ephemeral containers (kubectl debug) are not available on ECI")
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil {
			return unsupported("HostPathNotSupported", "volume %s is a hostPath; an ECI instance has no host disk to share: use an emptyDir, a configMap or a PVC", v.Name)
		}
	}
	for _, c := range allContainers(pod) {
		for _, p := range c.Ports {
			if p.HostPort != 0 && p.HostPort != p.ContainerPort {
				return unsupported("HostPortNotSupported", "container %s maps hostPort %d to %d; an ECI instance exposes container ports on its own IP: remove hostPort", c.Name, p.HostPort, p.ContainerPort)
			}
		}
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			return unsupported("PrivilegedNotSupported", "container %s is privileged, which ECI does not allow; drop privileged: true and add only the capabilities it needs", c.Name)
		}
	}
	return nil
}

func allContainers(pod *corev1.Pod) []*corev1.Container {
	out := make([]*corev1.Container, 0, len(pod.Spec.InitContainers)+len(pod.Spec.Containers))
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// IsDaemonSetPod reports whether a DaemonSet owns the pod. Such pods tolerate
// every taint and land on virtual nodes, but a node agent has nothing to do
// on an ECI instance.
func IsDaemonSetPod(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// Claim is what a PVC's bound volume resolves to on ECI.
type Claim struct {
	NFS  *model.NFSSource
	Disk *model.DiskSource
}

// Alibaba Cloud CSI drivers whose volumes ECI mounts natively.
const (
	CSIDriverNAS  = "nasplugin.csi.alibabacloud.com"
	CSIDriverDisk = "diskplugin.csi.alibabacloud.com"
)

// ResolveClaim maps a bound PV to an ECI volume: NFS (in-tree or the NAS CSI
// driver) or a disk (the disk CSI driver or FlexVolume). Anything else is
// refused with what would work instead.
func ResolveClaim(volName string, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, readOnly bool) (Claim, error) {
	if pvc.Status.Phase != corev1.ClaimBound || pv == nil {
		return Claim{}, fmt.Errorf("volume %s: claim %s/%s is not bound yet", volName, pvc.Namespace, pvc.Name)
	}
	src := pv.Spec.PersistentVolumeSource
	switch {
	case src.NFS != nil:
		return Claim{NFS: &model.NFSSource{Server: src.NFS.Server, Path: src.NFS.Path, ReadOnly: readOnly || src.NFS.ReadOnly}}, nil
	case src.CSI != nil && src.CSI.Driver == CSIDriverNAS:
		server := src.CSI.VolumeAttributes["server"]
		path := src.CSI.VolumeAttributes["path"]
		if server == "" {
			return Claim{}, unsupported("UnsupportedVolume", "volume %s: NAS PV %s has no volumeAttributes.server", volName, pv.Name)
		}
		if path == "" {
			path = "/"
		}
		return Claim{NFS: &model.NFSSource{Server: server, Path: path, ReadOnly: readOnly || src.CSI.ReadOnly}}, nil
	case src.CSI != nil && src.CSI.Driver == CSIDriverDisk:
		return Claim{Disk: &model.DiskSource{DiskID: src.CSI.VolumeHandle, FSType: src.CSI.FSType}}, nil
	case src.FlexVolume != nil && src.FlexVolume.Driver == "alicloud/disk":
		return Claim{Disk: &model.DiskSource{DiskID: src.FlexVolume.Options["volumeId"], FSType: src.FlexVolume.FSType}}, nil
	}
	return Claim{}, unsupported("UnsupportedVolume", "volume %s: PV %s is neither NFS/NAS nor an Alibaba Cloud disk, which are the volumes ECI can mount", volName, pv.Name)
}
