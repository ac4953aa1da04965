package provider

import (
	"context"
	"io"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/vnode-project/vnode/provider/kubeletapi"
)

// ECI's limits on an exec command.
const (
	maxExecArgs   = 20
	maxExecArgLen = 256
)

// GetContainerLogs implements the kubelet's /containerLogs.
func (p *Provider) GetContainerLogs(ctx context.Context, ns, name, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	id, pod, err := p.Instance(ns, name)
	if err != nil {
		return nil, err
	}
	if err := hasContainer(pod, container); err != nil {
		return nil, err
	}
	logs := &kubeletapi.Logs{
		Source: p.cloud,
		Poll:   p.cfg.LogPollInterval,
		Terminated: func(context.Context) (bool, error) {
			return p.containerTerminated(ns, name, container), nil
		},
	}
	return logs.Stream(ctx, id, container, opts)
}

// containerTerminated reports whether the container has ended for good:
// terminated and not going to be restarted, or its pod is gone.
func (p *Provider) containerTerminated(ns, name, container string) bool {
	_, pod, err := p.Instance(ns, name)
	if err != nil {
		return true
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == container && cs.State.Terminated != nil && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			return true
		}
	}
	return false
}

// RunInContainer implements the kubelet's /exec through ExecContainerCommand.
func (p *Provider) RunInContainer(ctx context.Context, ns, name, container string, cmd []string, attach api.AttachIO) error {
	id, pod, err := p.Instance(ns, name)
	if err != nil {
		return err
	}
	if err := hasContainer(pod, container); err != nil {
		return err
	}
	if len(cmd) == 0 {
		return errdefs.InvalidInput("exec needs a command")
	}
	if len(cmd) > maxExecArgs {
		return errdefs.InvalidInputf("ECI runs commands of at most %d arguments, got %d: wrap them in sh -c", maxExecArgs, len(cmd))
	}
	for i, a := range cmd {
		if len(a) > maxExecArgLen {
			return errdefs.InvalidInputf("ECI takes exec arguments of at most %d characters; argument %d has %d: pass long input on stdin", maxExecArgLen, i, len(a))
		}
	}
	uri, err := p.cloud.ExecCommand(ctx, id, container, cmd, attach.TTY(), attach.Stdin() != nil)
	if err != nil {
		return wrapKind(err, "starting exec in %s/%s (instance %s)", ns, name, id)
	}
	return kubeletapi.StreamExec(ctx, websocket.DefaultDialer, uri, attach)
}

// AttachToContainer implements the kubelet's /attach. ECI has no attach API.
func (p *Provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("kubectl attach is not available on ECI virtual nodes (ECI has no attach API); use kubectl logs -f to follow output or kubectl exec to run a command")
}

// PortForward implements the kubelet's /portForward. ECI has no API for it.
func (p *Provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errdefs.InvalidInput("kubectl port-forward is not available on ECI virtual nodes (ECI has no port-forward API); expose the port with a Service, or reach the pod IP from inside the VPC")
}

// GetStatsSummary implements the kubelet's /stats/summary.
func (p *Provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	return p.stats.Summary(ctx)
}

// GetMetricsResource implements the kubelet's /metrics/resource.
func (p *Provider) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	return p.stats.MetricsResource(ctx)
}

// runningPods lists pods with instances, for stats.
func (p *Provider) runningPods() []kubeletapi.RunningPod {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]kubeletapi.RunningPod, 0, len(p.entries))
	for _, e := range p.entries {
		if e.running() {
			out = append(out, kubeletapi.RunningPod{Pod: e.pod.pod(), InstanceID: e.instanceID})
		}
	}
	return out
}

func hasContainer(pod *corev1.Pod, name string) error {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return nil
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return nil
		}
	}
	return errdefs.NotFoundf("pod %s/%s has no container %q", pod.Namespace, pod.Name, name)
}
