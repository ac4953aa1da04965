package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// orderedCloud records the order of the calls the provider makes, as they
// arrive, and holds every create but the first pod's at a gate, as ECI's
// create quota holds a backlog.
type orderedCloud struct {
	*memCloud
	free string        // the pod whose create passes the gate
	gate chan struct{} // closed: creates pass

	mu      sync.Mutex
	calls   []string
	waiting int // creates held at the gate
}

func (c *orderedCloud) record(call string) {
	c.mu.Lock()
	c.calls = append(c.calls, call)
	c.mu.Unlock()
}

func (c *orderedCloud) log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

func (c *orderedCloud) CreateContainerGroup(ctx context.Context, g *model.ContainerGroup) (string, string, error) {
	pod := g.Tags[translate.TagPod]
	c.record("create " + pod)
	if pod != c.free {
		c.mu.Lock()
		c.waiting++
		c.mu.Unlock()
		select {
		case <-c.gate:
		case <-ctx.Done():
			return "", "", ctx.Err()
		}
	}
	return c.memCloud.CreateContainerGroup(ctx, g)
}

func (c *orderedCloud) DeleteContainerGroup(ctx context.Context, id string) error {
	c.record("delete " + id)
	return c.memCloud.DeleteContainerGroup(ctx, id)
}

func (c *orderedCloud) ListStatuses(ctx context.Context, tags map[string]string, changedWithin time.Duration) ([]model.GroupStatus, error) {
	c.record("list-statuses")
	return c.memCloud.ListStatuses(ctx, tags, changedWithin)
}

// With a backlog of creates waiting on the quota (every create worker held,
// more queued), a pod its user deletes is deleted in ECI before any create
// still queued, and the status of a running pod keeps reaching
// virtual-kubelet. Asserted on the order of the calls the cloud sees.
func TestDeletesAndStatusAreNotStarvedByCreateBacklog(t *testing.T) {
	const workers, backlog = 2, 10
	pods := []*corev1.Pod{pod("a")}
	for i := range backlog {
		pods = append(pods, pod(fmt.Sprintf("b%d", i)))
	}
	h := newHarness(t, pods...)
	cloud := &orderedCloud{memCloud: h.cloud, free: "a", gate: make(chan struct{})}
	h.p.cloud = cloud
	h.p.cfg.Workers = workers
	h.p.cfg.SyncInterval = time.Hour // the test syncs by hand
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { h.p.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("never: %s; calls %v", what, cloud.log())
		}
	}
	phaseOf := func(name string) phase {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return h.p.entries[h.p.keys[key("ns", name)]].phase
	}

	// a runs.
	if err := h.p.CreatePod(ctx, pods[0]); err != nil {
		t.Fatal(err)
	}
	waitUntil("a Running", func() bool { return phaseOf("a") == phaseRunning })
	// The backlog: every create worker held at the gate, the rest queued.
	for _, p := range pods[1:] {
		if err := h.p.CreatePod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil("every create worker held", func() bool {
		cloud.mu.Lock()
		defer cloud.mu.Unlock()
		return cloud.waiting >= workers
	})

	// Status flows: a's instance runs, a sync sees it, virtual-kubelet hears.
	cloud.set("eci-1", func(i *model.Instance) {
		i.Status, i.IntranetIP = translate.StatusRunning, "192.168.1.5"
		i.Containers = []model.ContainerStatus{{Name: "c", Ready: true, Current: model.ContainerState{State: "Running", Started: time.Now()}}}
	})
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil("a reported Running", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := h.notified["a"]
		return n != nil && n.Status.Phase == corev1.PodRunning && n.Status.PodIP == "192.168.1.5"
	})

	// The user deletes a: its instance goes while the creates wait.
	if err := h.p.DeletePod(ctx, pods[0]); err != nil {
		t.Fatal(err)
	}
	waitUntil("a's instance deleted", func() bool { return phaseOf("a") == phaseDeleted })
	close(cloud.gate)
	waitUntil("the backlog created", func() bool {
		for _, p := range pods[1:] {
			if phaseOf(p.Name) != phaseRunning {
				return false
			}
		}
		return true
	})

	calls := cloud.log()
	at := func(call string) int {
		i := slices.Index(calls, call)
		if i < 0 {
			t.Fatalf("no %q among the calls %v", call, calls)
		}
		return i
	}
	del := at("delete eci-1")
	var created []string
	for _, c := range calls {
		if strings.HasPrefix(c, "create b") {
			created = append(created, c)
		}
	}
	if len(created) != backlog {
		t.Fatalf("creates %v, want one per backlog pod", created)
	}
	// The held creates came first; every queued one after the delete and
	// after the status list the sync made meanwhile.
	lastHeld := 0
	for _, c := range created[:workers] {
		lastHeld = max(lastHeld, at(c))
	}
	list := slices.Index(calls[lastHeld:], "list-statuses")
	if list < 0 {
		t.Fatalf("no status list after the backlog formed: %v", calls)
	}
	list += lastHeld
	for _, c := range created[workers:] {
		if i := at(c); i < del || i < list {
			t.Errorf("%s reached the cloud before the delete of a's instance or the status list: %v", c, calls)
		}
	}
}
