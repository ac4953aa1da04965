package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// One session per replica through one address.
//
// Behind a load balancer every agent connection lands on a replica the
// balancer picks, so an agent cannot aim at a replica; and kube-apiserver's
// CONNECT reaches one replica the same way, which can serve the node only
// if the node's agent holds a session there. So each replica names itself
// and says how many replicas serve agents, and the agent keeps dialing the
// one address until it holds a session to as many distinct replicas (as
// ANP's agents do with its server IDs and server count).
//
// A session whose agent offered alpnReplicas starts with a control
// stream the server opens: the server writes a replicaHello, the agent
// answers keep or not (it drops a second session to a replica it already
// holds, before the server registers it, so the duplicate never displaces
// the session it duplicates), and the server then writes a replicaHello
// again whenever the replica count changes, so the agent dials for a new
// replica without waiting for a reconnect.

// alpnReplicas is the session protocol with the control stream.
// alpnProtocol (no control stream) is still served to older agents.
const alpnReplicas = "vnode-tunnel/2"

// replicaHello says which replica this is and how many serve agents.
type replicaHello struct {
	Replica string `json:"replica"`
	// Replicas is 0 when the replica does not know: the agent then holds
	// one session per address its server name resolves to.
	Replicas int `json:"replicas,omitempty"`
}

// helloAnswer is the agent's answer to the first replicaHello.
type helloAnswer struct {
	Keep bool `json:"keep"`
}

// Replicas is what a server replica says about itself: its ID, unique to
// this process (a restarted replica is a new one, so an agent never takes
// the new process for the old one's half-dead session), and the replica
// count, which follows the agents' Service (WatchReplicaCount).
type Replicas struct {
	id string

	mu      sync.Mutex
	count   int
	changed chan struct{} // closed and replaced at each change
}

// NewReplicas names this replica name-<random>; the count starts unknown (0).
func NewReplicas(name string) *Replicas {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	if name == "" {
		name = "edge-tunnel-server"
	}
	return &Replicas{id: name + "-" + hex.EncodeToString(b), changed: make(chan struct{})}
}

// ID is this replica's name in the control stream.
func (r *Replicas) ID() string { return r.id }

// Count is the number of replicas serving agents (0: unknown).
func (r *Replicas) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// Set changes the count, waking Changed's waiters if it differs.
func (r *Replicas) Set(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == r.count {
		return
	}
	r.count = n
	close(r.changed)
	r.changed = make(chan struct{})
}

// Changed is closed at the next change of the count.
func (r *Replicas) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *Replicas) hello() replicaHello { return replicaHello{Replica: r.id, Replicas: r.Count()} }

// WatchReplicaCount keeps r's count at the number of ready endpoints of
// Service namespace/service (its EndpointSlices) until ctx ends, and
// returns the informer's HasSynced. The count thus follows scaling,
// rollouts and failed replicas with no flag to keep in step (ANP's
// --server-count is wrong from the moment someone scales the
// Deployment), and it counts what the load balancer can reach: a replica
// that is not ready takes no agent connections.
func WatchReplicaCount(ctx context.Context, client kubernetes.Interface, namespace, service string, r *Replicas, log *logrus.Entry) (cache.InformerSynced, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=" + service
		}))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	recount := func(any) {
		n := readyEndpoints(inf.GetStore().List())
		if n != r.Count() {
			log.WithFields(logrus.Fields{"service": namespace + "/" + service, "replicas": n}).Info("replica count changed")
		}
		r.Set(n)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: recount, UpdateFunc: func(_, o any) { recount(o) }, DeleteFunc: recount,
	}); err != nil {
		return nil, fmt.Errorf("watching the endpoints of Service %s/%s: %w", namespace, service, err)
	}
	f.Start(ctx.Done())
	return inf.HasSynced, nil
}

// readyEndpoints counts the distinct ready addresses of EndpointSlices (a
// replica may appear in two slices while they are being rebalanced).
func readyEndpoints(objs []any) int {
	seen := map[string]struct{}{}
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) > 0 {
				seen[ep.Addresses[0]] = struct{}{}
			}
		}
	}
	return len(seen)
}

// controlStreams are the sessions' control streams on a server, to tell
// their agents of a new replica count.
type controlStreams struct {
	mu sync.Mutex
	m  map[*session]*controlStream
}

// controlStream serialises its announcements, and each writes the count
// current when it goes out: two quick changes never reach the agent in
// the wrong order.
type controlStream struct {
	mu sync.Mutex
	st *yamux.Stream
}

func (c *controlStreams) add(s *session, st *yamux.Stream) *controlStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[*session]*controlStream{}
	}
	cs := &controlStream{st: st}
	c.m[s] = cs
	return cs
}

// send writes the replica's current hello. A write to a dead session
// gives up after timeout.
func (c *controlStream) send(r *Replicas, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.st.SetWriteDeadline(time.Now().Add(timeout))
	return writeFrame(c.st, r.hello())
}

func (c *controlStreams) remove(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, s)
}

func (c *controlStreams) all() []*controlStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*controlStream, 0, len(c.m))
	for _, st := range c.m {
		out = append(out, st)
	}
	return out
}

// greet runs the server's half of the control stream's start: it tells the
// agent who this replica is and returns the stream for later
// announcements, the count it told, and whether the agent keeps the
// session.
func (s *Server) greet(mux *yamux.Session) (*yamux.Stream, int, bool, error) {
	st, err := mux.OpenStream()
	if err != nil {
		return nil, 0, false, fmt.Errorf("opening the control stream: %w", err)
	}
	_ = st.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h := s.cfg.Replicas.hello()
	if err := writeFrame(st, h); err != nil {
		return nil, 0, false, fmt.Errorf("telling the agent this replica: %w", err)
	}
	var ans helloAnswer
	if err := readFrame(st, &ans); err != nil {
		return nil, 0, false, fmt.Errorf("reading the agent's answer: %w", err)
	}
	_ = st.SetDeadline(time.Time{})
	return st, h.Replicas, ans.Keep, nil
}

// followReplicas keeps session sess's agent told of the replica count: it
// registers the control stream for announceReplicas, and sends the count
// again if it changed while the session was being greeted (that change's
// announcement went out before the stream was registered).
func (s *Server) followReplicas(sess *session, ctl *yamux.Stream, told int) (stop func()) {
	cs := s.ctls.add(sess, ctl)
	if s.cfg.Replicas.Count() != told {
		go func() { _ = cs.send(s.cfg.Replicas, s.cfg.HandshakeTimeout) }()
	}
	return func() { s.ctls.remove(sess) }
}

// announceReplicas tells every agent of each new replica count until ctx
// ends, each in its own goroutine so that a dead session holds up no
// other.
func (s *Server) announceReplicas(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Replicas.Changed():
		}
		for _, c := range s.ctls.all() {
			go func() {
				if err := c.send(s.cfg.Replicas, s.cfg.HandshakeTimeout); err != nil {
					s.cfg.Log.WithError(err).Debug("announcing the replica count")
				}
			}()
		}
	}
}
