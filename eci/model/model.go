package model

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ContainerGroup is what ECI is asked to create for a pod: the domain form
// of CreateContainerGroup, free of the API's wire encoding.
type ContainerGroup struct {
	Name          string
	HostName      string // the instance's hostname (ECI's HostName)
	RestartPolicy string // Always, OnFailure or Never
	// CPU (vCPU) and MemoryGi are the instance size, rounded to a sold
	// specification; zero when InstanceTypes chooses the size.
	CPU, MemoryGi float64
	// InstanceTypes are ECS types from k8s.aliyun.com/eci-use-specs.
	InstanceTypes []string

	Containers          []Container
	InitContainers      []Container
	Volumes             []Volume
	RegistryCredentials []RegistryCredential
	DNS                 DNS
	HostAliases         []corev1.HostAlias
	Sysctls             []corev1.Sysctl
	Tags                map[string]string

	VSwitchIDs      []string
	SecurityGroupID string
	ResourceGroupID string
	RAMRoleName     string

	SpotStrategy   string // "", SpotAsPriceGo or SpotWithPriceLimit
	SpotPriceLimit float64

	AutoMatchImageCache bool
	ImageSnapshotID     string
	AutoCreateEIP       bool
	EIPInstanceID       string
	EIPBandwidth        int
	NTPServers          []string

	TerminationGracePeriodSeconds *int64
	ActiveDeadlineSeconds         *int64
	// ClientToken makes creation idempotent: derived from the pod UID.
	ClientToken string
}

// Container is one container of the group.
type Container struct {
	Name            string
	Image           string
	ImagePullPolicy string
	WorkingDir      string
	Command         []string
	Args            []string
	Env             []EnvVar
	Ports           []Port
	VolumeMounts    []VolumeMount
	CPU, MemoryGi   float64 // the container's share; 0 means unset
	GPU             int
	Stdin           bool
	StdinOnce       bool
	TTY             bool
	LivenessProbe   *Probe
	ReadinessProbe  *Probe
	StartupProbe    *Probe
	PostStart       *Handler
	PreStop         *Handler
	SecurityContext *SecurityContext
}

// Port is a container port.
type Port struct {
	Port     int32
	Protocol string // TCP or UDP
}

// VolumeMount mounts a volume of the group.
type VolumeMount struct {
	Name      string
	MountPath string
	SubPath   string
	ReadOnly  bool
}

// Probe is a liveness, readiness or startup probe.
type Probe struct {
	Handler
	InitialDelaySeconds int32
	PeriodSeconds       int32
	TimeoutSeconds      int32
	SuccessThreshold    int32
	FailureThreshold    int32
}

// Handler is what a probe or lifecycle hook runs: exactly one is set.
type Handler struct {
	Exec      []string
	HTTPGet   *HTTPGet
	TCPSocket *TCPSocket
}

// HTTPGet is an HTTP probe or hook.
type HTTPGet struct {
	Host    string
	Path    string
	Port    int32
	Scheme  string
	Headers []corev1.HTTPHeader
}

// TCPSocket is a TCP probe or hook.
type TCPSocket struct {
	Host string
	Port int32
}

// SecurityContext is the part of a container's security context ECI applies.
type SecurityContext struct {
	RunAsUser              *int64
	RunAsGroup             *int64
	ReadOnlyRootFilesystem bool
	AddCapabilities        []string
}

// Volume is one volume of the group; exactly one source is set.
type Volume struct {
	Name        string
	EmptyDir    *EmptyDir
	ConfigFiles *ConfigFiles
	NFS         *NFSSource
	Disk        *DiskSource
}

// EmptyDir is scratch space, in memory when Medium is "Memory".
type EmptyDir struct {
	Medium    string
	SizeLimit string
}

// ConfigFiles is a configMap, secret, downwardAPI or projected volume,
// materialised as files.
type ConfigFiles struct {
	Files       []File
	DefaultMode int32
	// TokenExpiry is when the earliest service-account token in Files
	// expires (zero when none): the provider refreshes before then.
	TokenExpiry time.Time
}

// Instance is an ECI container group as the cloud reports it: the domain
// form of DescribeContainerGroups' answer.
type Instance struct {
	ID           string
	Name         string
	Status       string // Scheduling, Pending, Running, Succeeded, Failed, Expired, ...
	ZoneID       string
	InstanceType string
	CPU          float64
	MemoryGi     float64
	IntranetIP   string
	InternetIP   string
	Created      time.Time
	Succeeded    time.Time
	Failed       time.Time
	Expired      time.Time
	Tags         map[string]string

	Containers     []ContainerStatus
	InitContainers []ContainerStatus
	Events         []Event
}

// GroupStatus is one entry of a status list: cheaper than an Instance to
// list, it tells which instances exist and which changed.
type GroupStatus struct {
	ID     string
	Status string
	// Digest changes whenever anything in the instance's status does.
	Digest uint64
}

// ContainerStatus is one container's state in an Instance.
type ContainerStatus struct {
	Name         string
	Image        string
	Ready        bool
	RestartCount int32
	Current      ContainerState
	Previous     ContainerState
}

// ContainerState is Waiting, Running or Terminated, with details.
type ContainerState struct {
	State        string
	DetailStatus string
	Reason       string
	Message      string
	ExitCode     int32
	Signal       int32
	Started      time.Time
	Finished     time.Time
}

// Event is an ECI event on an instance.
type Event struct {
	Type    string // Normal or Warning
	Reason  string
	Message string
	Name    string
	Count   int32
	First   time.Time
	Last    time.Time
}

// DNS is a pod's resolver configuration (ECI's DnsConfig) plus the policy
// ECI applies: "Default" uses the VPC resolver, "None" only DnsConfig.
type DNS struct {
	Policy      string
	Nameservers []string
	Searches    []string
	Options     []corev1.PodDNSConfigOption
}

// EnvVar is one resolved environment variable. FieldPath is set instead of
// Value for fields only the instance knows (its IP), which ECI resolves.
type EnvVar struct {
	Name      string
	Value     string
	FieldPath string
}

// RegistryCredential is one image registry login (ECI's
// ImageRegistryCredential).
type RegistryCredential struct {
	Server   string
	UserName string
	Password string
}

// NFSSource is an NFS or NAS export.
type NFSSource struct {
	Server   string
	Path     string
	ReadOnly bool
}

// DiskSource is an Alibaba Cloud disk.
type DiskSource struct {
	DiskID string
	FSType string
}

// File is one file of a configuration volume (ECI's ConfigFileVolume).
type File struct {
	Path    string // relative to the mount point
	Content []byte
	Mode    int32 // 0 means the volume's default
}
