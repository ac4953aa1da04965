package tunnel

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PortPolicy is the port policy in force, swapped atomically as the
// ConfigMap changes.
type PortPolicy struct{ p atomic.Pointer[Ports] }

// NewPortPolicy starts at p.
func NewPortPolicy(p Ports) *PortPolicy {
	pp := &PortPolicy{}
	pp.p.Store(&p)
	return pp
}

// Get returns the policy in force.
func (pp *PortPolicy) Get() Ports { return *pp.p.Load() }

// Set replaces it.
func (pp *PortPolicy) Set(p Ports) { pp.p.Store(&p) }

// PortConfig applies ConfigMap data to a PortPolicy: a good value replaces
// the policy, a bad one is reported (log and, with a recorder, an Event)
// and the last good policy stays in force.
type PortConfig struct {
	Policy *PortPolicy
	Log    *logrus.Entry
	// Report, if set, is called with every rejected ConfigMap (an Event).
	Report func(cm *corev1.ConfigMap, err error)

	mu      sync.Mutex
	applied string // resourceVersion last applied or rejected, to report once
}

// Apply handles one version of the ConfigMap (nil: deleted, defaults).
func (c *PortConfig) Apply(cm *corev1.ConfigMap) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cm == nil {
		c.Policy.Set(DefaultPorts())
		c.applied = ""
		c.Log.WithField("ports", c.Policy.Get().String()).Info("port ConfigMap gone: default ports in force")
		return nil
	}
	if cm.ResourceVersion != "" && cm.ResourceVersion == c.applied {
		return nil
	}
	c.applied = cm.ResourceVersion
	log := c.Log.WithFields(logrus.Fields{"configmap": cm.Namespace + "/" + cm.Name, "resourceVersion": cm.ResourceVersion})
	p, err := ParsePorts(cm.Data)
	if err != nil {
		err = fmt.Errorf("rejecting port configuration: %w", err)
		log.WithError(err).WithField("in_force", c.Policy.Get().String()).Error("bad port ConfigMap: the last good ports stay in force")
		if c.Report != nil {
			c.Report(cm, err)
		}
		return err
	}
	for _, w := range p.Warnings {
		log.Warn(w)
	}
	c.Policy.Set(p)
	log.WithField("ports", p.String()).Info("port configuration applied")
	return nil
}

// WatchPortConfig follows kube-system/edge-tunnel-server-cfg until ctx
// ends, applying each version to pc. It returns the informer's HasSynced.
func WatchPortConfig(ctx context.Context, client kubernetes.Interface, pc *PortConfig) (cache.InformerSynced, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute,
		informers.WithNamespace(ConfigMapNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	apply := func(o any) {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			_ = pc.Apply(cm)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, o any) { apply(o) },
		DeleteFunc: func(any) { _ = pc.Apply(nil) },
	}); err != nil {
		return nil, fmt.Errorf("watching ConfigMap %s/%s: %w", ConfigMapNamespace, ConfigMapName, err)
	}
	f.Start(ctx.Done())
	return inf.HasSynced, nil
}

// EventReporter returns a PortConfig.Report that records a Warning Event on
// the rejected ConfigMap.
func EventReporter(client kubernetes.Interface, component string, log *logrus.Entry) func(*corev1.ConfigMap, error) {
	return func(cm *corev1.ConfigMap, cause error) {
		now := metav1.Now()
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", cm.Name, now.UnixNano()), Namespace: cm.Namespace},
			InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: cm.Namespace, Name: cm.Name,
				UID: cm.UID, ResourceVersion: cm.ResourceVersion},
			Reason: "InvalidPortConfig", Message: cause.Error() + "; the last good configuration stays in force",
			Type: corev1.EventTypeWarning, Source: corev1.EventSource{Component: component},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.CoreV1().Events(cm.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			log.WithError(err).Warn("recording the rejected port configuration as an Event")
		}
	}
}
