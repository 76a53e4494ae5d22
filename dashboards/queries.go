package dashboards

import (
	"regexp"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Query is one PromQL target of a dashboard panel, with its variables
// left as Grafana writes them ($node_id, $__rate_interval...).
type Query struct {
	Dashboard string // the dashboard's uid
	Panel     string // the panel's title
	RefID     string // the target's refId: A, B...
	Expr      string
	Legend    string
	// Instant queries are evaluated at one time (tables); the others over
	// the dashboard's time range.
	Instant bool
	// Exemplars is true where the panel shows the series' exemplars.
	Exemplars bool
}

// Variable is one template variable that Grafana fills from Prometheus:
// Query is a label_values(selector, label) call, not PromQL.
type Variable struct {
	Dashboard string // the dashboard's uid
	Name      string
	Query     string
}

// Queries lists every panel's PromQL target of every dashboard, in panel
// order.
func Queries() ([]Query, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, d := range all {
		out = append(out, QueriesOf(d.Model)...)
	}
	return out, nil
}

// Variables lists the query variables of every dashboard.
func Variables() ([]Variable, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var out []Variable
	for _, d := range all {
		out = append(out, VariablesOf(d.Model)...)
	}
	return out, nil
}

// QueriesOf lists the Prometheus targets of d's panels, those inside rows
// included; other targets are left out.
func QueriesOf(d Model) []Query {
	var out []Query
	for _, p := range Panels(d) {
		for _, t := range p.Targets {
			pt, ok := PromTarget(t)
			if !ok {
				continue
			}
			out = append(out, Query{
				Dashboard: deref(d.Uid),
				Panel:     deref(p.Title),
				RefID:     deref(pt.RefId),
				Expr:      pt.Expr,
				Legend:    deref(pt.LegendFormat),
				Instant:   pt.Instant != nil && *pt.Instant,
				Exemplars: pt.Exemplar != nil && *pt.Exemplar,
			})
		}
	}
	return out
}

// VariablesOf lists d's query variables.
func VariablesOf(d Model) []Variable {
	var out []Variable
	for _, v := range d.Templating.List {
		if v.Type != dashboard.VariableTypeQuery || v.Query == nil || v.Query.String == nil {
			continue
		}
		out = append(out, Variable{Dashboard: deref(d.Uid), Name: v.Name, Query: *v.Query.String})
	}
	return out
}

// Panels lists d's panels, rows left out and their panels included.
func Panels(d Model) []dashboard.Panel {
	var out []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			out = append(out, *p.Panel)
		case p.RowPanel != nil:
			out = append(out, p.RowPanel.Panels...)
		}
	}
	return out
}

// PromTarget is t as a Prometheus target, built or decoded.
func PromTarget(t variants.Dataquery) (*prometheus.Dataquery, bool) {
	switch v := t.(type) {
	case prometheus.Dataquery:
		return &v, true
	case *prometheus.Dataquery:
		return v, v != nil
	}
	return nil, false
}

// RateInterval is what Expand puts for $__rate_interval (and
// $__interval) unless told otherwise: four times a 15s scrape interval.
const RateInterval = "1m"

var variableRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)`)

// Expand substitutes the variables of a dashboard query as Grafana would
// for one value each: vars maps a name (node_id, pool_id, gpu,
// __rate_interval...) to its value. $__rate_interval and $__interval
// default to RateInterval, $__range to 1h, and any other variable to .*
// (the "All" value of node_id, pool_id and gpu; it matches nothing where
// a query wants one value, e.g. node_id="$node_id").
func Expand(expr string, vars map[string]string) string {
	return variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		if v, ok := vars[name]; ok {
			return v
		}
		switch name {
		case "__rate_interval", "__interval":
			return RateInterval
		case "__range":
			return "1h"
		}
		if strings.HasPrefix(name, "__") {
			return m // a Grafana global Expand does not know: leave it
		}
		return ".*"
	})
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
