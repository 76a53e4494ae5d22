// Package promtext reads the Prometheus text exposition that llorch
// consumes — llama-server's /metrics, dcgm-exporter's, the node agents' —
// into metric families, and the values and labels of their samples.
package promtext

import (
	"fmt"
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse reads text exposition into families by name. Names follow the
// UTF-8 scheme, which also admits llama.cpp's "llamacpp:" prefix.
func Parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics text: %w", err)
	}
	return fams, nil
}

// Value is a gauge, counter or untyped sample's value; NaN for other kinds
// (histograms, summaries), which llorch does not read.
func Value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// Label is the value of a sample's label, "" when absent.
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
