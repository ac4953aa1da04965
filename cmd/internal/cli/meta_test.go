package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestMetaFlagsOpen(t *testing.T) {
	parse := func(args ...string) (Meta, error) {
		var m MetaFlags
		f := pflag.NewFlagSet("t", pflag.ContinueOnError)
		m.AddFlags(f, "127.0.0.1:0")
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return m.Open()
	}
	meta, err := parse("--metrics-addr=127.0.0.1:0")
	if err != nil || meta.Metrics == nil || meta.Health == nil || meta.MetricsCert != nil || meta.MetricsClientCA != nil {
		t.Fatalf("defaults: %+v, %v", meta, err)
	}
	_ = meta.Metrics.Close()
	_ = meta.Health.Close()
	if meta, err = parse("--metrics-addr=", "--health-addr="); err != nil || meta.Metrics != nil || meta.Health != nil {
		t.Fatalf("empty addresses disable: %+v, %v", meta, err)
	}
	for flag, args := range map[string][]string{
		"--metrics-addr":      {"--metrics-addr=256.0.0.1:1"},
		"--metrics-cert":      {"--metrics-addr=", "--health-addr=", "--metrics-cert=/nonexistent/tls.crt"},
		"--metrics-client-ca": {"--metrics-addr=", "--health-addr=", "--metrics-client-ca=/nonexistent/ca.crt"},
	} {
		if _, err := parse(args...); err == nil || !strings.HasPrefix(err.Error(), flag+":") {
			t.Errorf("%v: %v, want an error naming %s", args, err, flag)
		}
	}
}
