package promtext

import (
	"math"
	"strings"
	"testing"
)

func TestParseValueLabel(t *testing.T) {
	fams, err := Parse(strings.NewReader(`# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 3
# TYPE llorch_pool_tokens_predicted_total counter
llorch_pool_tokens_predicted_total{node_id="n1",pool_id="p"} 42
untyped_thing 7
# TYPE h histogram
h_bucket{le="+Inf"} 1
h_sum 2
h_count 1
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"llamacpp:requests_deferred": 3, "llorch_pool_tokens_predicted_total": 42, "untyped_thing": 7} {
		if got := Value(fams[name].GetMetric()[0]); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := Value(fams["h"].GetMetric()[0]); !math.IsNaN(got) {
		t.Errorf("histogram value = %v, want NaN", got)
	}
	m := fams["llorch_pool_tokens_predicted_total"].GetMetric()[0]
	if Label(m, "pool_id") != "p" || Label(m, "gpu") != "" {
		t.Errorf("labels: pool_id %q gpu %q", Label(m, "pool_id"), Label(m, "gpu"))
	}
	if _, err := Parse(strings.NewReader("not metrics {")); err == nil {
		t.Error("Parse accepted garbage")
	}
}
