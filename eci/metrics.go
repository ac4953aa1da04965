package eci

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	calls    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_api_calls_total", Help: "ECI API requests sent, by action."}, []string{"action"}),
		errors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_api_errors_total", Help: "ECI API requests that failed, by action and error code."}, []string{"action", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "eci_api_request_duration_seconds", Help: "ECI API request latency.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"action"}),
		retries:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eci_api_retries_total", Help: "ECI API requests retried, by action."}, []string{"action"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.errors, m.duration, m.retries} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("registering ECI metrics: %w", err)
				}
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(action string, d time.Duration, err *Error) {
	m.calls.WithLabelValues(action).Inc()
	m.duration.WithLabelValues(action).Observe(d.Seconds())
	if err != nil {
		code := err.Code
		if code == "" {
			code = err.Kind.String()
		}
		m.errors.WithLabelValues(action, code).Inc()
	}
}
