package cli

import (
	"net"

	"github.com/spf13/pflag"

	"github.com/vnode-project/vnode/internal/certs"
)

// MetaFlags are a component's meta listeners: /metrics over HTTPS for an
// authenticated scraper, and the open health probes.
type MetaFlags struct {
	metricsAddr, healthAddr                  string
	metricsCert, metricsKey, metricsClientCA string
}

// AddFlags registers --metrics-addr, --metrics-cert, --metrics-key,
// --metrics-client-ca and --health-addr.
func (m *MetaFlags) AddFlags(f *pflag.FlagSet, healthDefault string) {
	f.StringVar(&m.metricsAddr, "metrics-addr", ":8443", "address of /metrics over HTTPS, for a client certificate from --metrics-client-ca or a bearer token allowed to get /metrics (empty disables)")
	f.StringVar(&m.metricsCert, "metrics-cert", "", "serving certificate of /metrics, reloaded when it changes (default: self-signed)")
	f.StringVar(&m.metricsKey, "metrics-key", "", "its key (default: in the certificate file)")
	f.StringVar(&m.metricsClientCA, "metrics-client-ca", "", "CA bundle of scrapers' client certificates (optional)")
	f.StringVar(&m.healthAddr, "health-addr", healthDefault, "address of /healthz and /readyz (open; empty disables)")
}

// Meta is what MetaFlags name, opened: a nil listener is disabled, a nil
// certificate or CA is not given.
type Meta struct {
	Metrics, Health net.Listener
	MetricsCert     *certs.KeyPair
	MetricsClientCA *certs.CABundle
}

// Open listens and loads the certificate files, naming the flag at fault.
func (m *MetaFlags) Open() (Meta, error) {
	var out Meta
	var err error
	if out.Metrics, err = Listen(m.metricsAddr, "--metrics-addr"); err != nil {
		return Meta{}, err
	}
	if out.Health, err = Listen(m.healthAddr, "--health-addr"); err != nil {
		return Meta{}, err
	}
	if out.MetricsCert, err = KeyPair(m.metricsCert, m.metricsKey, "--metrics-cert"); err != nil {
		return Meta{}, err
	}
	if out.MetricsClientCA, err = CABundle(m.metricsClientCA, "--metrics-client-ca"); err != nil {
		return Meta{}, err
	}
	return out, nil
}
