package approver

import (
	"bytes"
	"context"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
)

// apiWrites counts the API server's write requests (apiserver_request_total
// by verb), read off its own /metrics, so a burst's writes are counted by
// the server whoever made them and without wrapping the approver's client.
type apiWrites struct {
	// approvals: updates of a CSR's approval subresource; events: Event
	// creates and updates; other: any other write to a CSR but its
	// creation and the signer's status update.
	approvals, events, other float64
}

// minus is what was written since before.
func (w apiWrites) minus(before apiWrites) apiWrites {
	return apiWrites{approvals: w.approvals - before.approvals, events: w.events - before.events, other: w.other - before.other}
}

func (w apiWrites) plus(o apiWrites) apiWrites {
	return apiWrites{approvals: w.approvals + o.approvals, events: w.events + o.events, other: w.other + o.other}
}

func (w apiWrites) total() float64 { return w.approvals + w.events + w.other }

var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}

// countWrites scrapes kube-apiserver's /metrics as the admin.
func countWrites(ctx context.Context, admin kubernetes.Interface) (apiWrites, error) {
	raw, err := admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return apiWrites{}, fmt.Errorf("reading kube-apiserver's metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return apiWrites{}, fmt.Errorf("parsing kube-apiserver's metrics: %w", err)
	}
	var w apiWrites
	fam, ok := families["apiserver_request_total"]
	if !ok {
		return apiWrites{}, fmt.Errorf("kube-apiserver's metrics have no apiserver_request_total")
	}
	for _, m := range fam.GetMetric() {
		l := labels(m)
		if !writeVerbs[l["verb"]] {
			continue
		}
		n := m.GetCounter().GetValue()
		switch {
		case l["resource"] == "events":
			w.events += n
		case l["resource"] != "certificatesigningrequests":
		case l["subresource"] == "approval":
			w.approvals += n
		case l["subresource"] == "status", l["subresource"] == "" && l["verb"] == "POST":
			// The signer's and the requestor's: the same for every target.
		default:
			w.other += n
		}
	}
	return w, nil
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
