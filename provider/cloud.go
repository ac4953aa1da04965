package provider

import (
	"context"
	"time"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/kubeletapi"
)

// Cloud is what the provider needs from ECI. Errors follow virtual-kubelet's
// errdefs: errdefs.IsNotFound for an instance that does not exist,
// errdefs.IsInvalidInput for a request ECI refuses (not worth retrying);
// anything else is transient.
type Cloud interface {
	// CreateContainerGroup creates g (idempotent on g.ClientToken) and
	// returns the instance id and the request id.
	CreateContainerGroup(ctx context.Context, g *model.ContainerGroup) (id, requestID string, err error)
	// ListContainerGroups hands each, page by page as they come, every
	// instance carrying all of tags; an error of each's ends the list.
	// Pages, not one list: every instance's details at once, at 10,000
	// pods, are a burst of memory the collector's headroom doubles.
	ListContainerGroups(ctx context.Context, tags map[string]string, each func([]*model.Instance) error) error
	// ListStatuses returns the status of every instance carrying all of
	// tags, following pagination: cheap enough to call every sync. With
	// changedWithin > 0, only of those whose status changed within that
	// long (ECI's SinceSecond): a poll that costs what changed.
	ListStatuses(ctx context.Context, tags map[string]string, changedWithin time.Duration) ([]model.GroupStatus, error)
	// GetContainerGroups returns the instances with these ids; ids that do
	// not exist are left out.
	GetContainerGroups(ctx context.Context, ids []string) ([]*model.Instance, error)
	// DeleteContainerGroup deletes an instance.
	DeleteContainerGroup(ctx context.Context, id string) error
	// ExecCommand starts cmd in a container and returns the WebSocket URI
	// of the session (ExecContainerCommand).
	ExecCommand(ctx context.Context, instanceID, container string, cmd []string, tty, stdin bool) (string, error)

	kubeletapi.LogSource     // DescribeContainerLog
	kubeletapi.MetricsSource // DescribeMultiContainerGroupMetric
}
