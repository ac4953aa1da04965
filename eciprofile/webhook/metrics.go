package webhook

import "github.com/prometheus/client_golang/prometheus"

// metrics are eci-profile's Prometheus series.
type metrics struct {
	matches  *prometheus.CounterVec   // form, selector
	errors   *prometheus.CounterVec   // reason
	latency  *prometheus.HistogramVec // result
	reloads  *prometheus.CounterVec   // form, result
	certExp  prometheus.GaugeFunc
	selector prometheus.GaugeFunc
}

// Admission results, as the latency histogram labels them.
const (
	resultMutated   = "mutated"
	resultUnchanged = "unchanged"
	resultError     = "error"
)

func newMetrics(reg prometheus.Registerer, certNotAfter func() float64, selectors func() float64) *metrics {
	m := &metrics{
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_profile_matches_total",
			Help: "Pods a selector matched, by form (selector or configmap) and selector name."}, []string{"form", "selector"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_profile_errors_total",
			Help: "Admission requests answered unchanged because of an error, by reason."}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "eci_profile_admission_duration_seconds",
			Help:    "Time to answer an admission request, by result (mutated, unchanged, error).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1}}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_profile_reloads_total",
			Help: "Selector reloads by form and result (applied or rejected: the last good set stays)."}, []string{"form", "result"}),
		certExp: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eci_profile_serving_cert_not_after_seconds",
			Help: "Unix time the served certificate expires."}, certNotAfter),
		selector: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eci_profile_selectors",
			Help: "Selectors in force (both forms)."}, selectors),
	}
	reg.MustRegister(m.matches, m.errors, m.latency, m.reloads, m.certExp, m.selector)
	return m
}
