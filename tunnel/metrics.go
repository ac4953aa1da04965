package tunnel

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of a server or an agent. Each instance has its own, registered on
// the registerer it was given (no global state).
type Metrics struct {
	Sessions       *prometheus.GaugeVec   // by node and identity
	Replacements   prometheus.Counter     // sessions replaced by a newer one for the same node and identity
	SilentClosed   prometheus.Counter     // sessions ended because the agent stopped answering a ping (liveness.go)
	Streams        *prometheus.GaugeVec   // open streams, by port class
	DialDuration   prometheus.Histogram   // until the agent answered
	DialFailures   *prometheus.CounterVec // by reason
	Bytes          *prometheus.CounterVec // by direction: to_node, from_node, to_direct, from_direct
	Stalls         prometheus.Counter     // writes into a stream that waited on its flow-control window
	Refused        *prometheus.CounterVec // requests refused before a dial, by reason
	Routed         *prometheus.CounterVec // requests routed to a session, by route kind: own, gateway, direct
	AgentRejected  *prometheus.CounterVec // agent sessions refused, by reason
	PendingDials   prometheus.Gauge
	AgentSessions  prometheus.Gauge // agent side: sessions held
	AgentReconnect prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "vnode_tunnel"
	m := &Metrics{
		Sessions:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sessions", Help: "Agent sessions per node and identity (certificate CN prefix) on this server."}, []string{"node", "identity"}),
		Replacements:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "session_replacements_total", Help: "Sessions replaced by a newer session for the same node and identity."}),
		SilentClosed:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "sessions_silent_closed_total", Help: "Sessions ended because a ping went unanswered (the keepalive round, or a probe after an unanswered dial): the agent's connection went quiet without closing (power cut, a NAT that forgot it)."}),
		Streams:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "streams", Help: "Open tunneled streams by port class."}, []string{"class"}),
		DialDuration:   prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "dial_duration_seconds", Help: "Time from stream open to the agent's dial answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		DialFailures:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dial_failures_total", Help: "Failed dials by reason."}, []string{"reason"}),
		Bytes:          prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bytes_total", Help: "Bytes tunneled by direction."}, []string{"direction"}),
		Stalls:         prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "flow_control_stalls_total", Help: "Writes into a stream that waited over 50ms for its window (the reader was slow)."}),
		Refused:        prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_refused_total", Help: "Requests refused before any dial, by reason (address_clash: an address two nodes claim; identity_not_allowed: the node's only session is of an identity that may not serve it)."}, []string{"reason"}),
		Routed:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_routed_total", Help: "Requests routed to a session and dialed, by route: own (the node's own session), gateway (a gateway of the node's network domain), direct (an address in --direct-cidrs, dialed by the server)."}, []string{"route"}),
		AgentRejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "agent_rejected_total", Help: "Agent connections refused, by reason."}, []string{"reason"}),
		PendingDials:   prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "pending_dials", Help: "Dials waiting for the agent's answer."}),
		AgentSessions:  prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "agent_server_sessions", Help: "Agent side: sessions held to server replicas."}),
		AgentReconnect: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "agent_connect_attempts_total", Help: "Agent side: attempts to connect to a server replica."}),
	}
	if reg != nil {
		reg.MustRegister(m.Sessions, m.Replacements, m.SilentClosed, m.Streams, m.DialDuration, m.DialFailures, m.Bytes, m.Stalls,
			m.Refused, m.Routed, m.AgentRejected, m.PendingDials, m.AgentSessions, m.AgentReconnect)
	}
	return m
}
