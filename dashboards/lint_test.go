package dashboards_test

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/grafana/grafana-foundation-sdk/go/units"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/llorch/llorch/dashboards"
)

// The rules of Grafana's dashboard-linter (and the monitoring mixins'
// conventions), re-implemented over the SDK's model: each returns the
// problems it finds in one dashboard.

type rule struct {
	name  string
	check func(env *lintEnv, c committed) []string
}

var rules = []rule{
	{"dashboard-uid", checkUID},
	{"dashboard-links", checkDashboardLinks},
	{"template-datasource", checkTemplateDatasource},
	{"template-variables", checkTemplateVariables},
	{"panel-datasource", checkPanelDatasource},
	{"panel-title-description", checkTitleDescription},
	{"panel-units", checkUnits},
	{"panel-ids", checkPanelIDs},
	{"panel-legend", checkLegend},
	{"panel-links", checkPanelLinks},
	{"panel-layout", checkLayout},
	{"target-datasource", checkTargetDatasource},
	{"target-promql", checkPromQL},
	{"target-rate-interval", checkRateInterval},
	{"target-counter-agg", checkCounters},
	{"target-metrics-documented", checkDocumented},
	{"target-labels", checkLabels},
	{"target-variables", checkVariablesDefined},
}

func ruleNamed(t *testing.T, name string) rule {
	t.Helper()
	for _, r := range rules {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no rule %s", name)
	return rule{}
}

// metric is what docs/metrics.md (or a recording rule) says of a series.
type metric struct {
	typ    string // gauge, counter (also a histogram's _bucket, _count, _sum)
	labels map[string]bool
	// recorded series (recording rules) have only the labels they keep;
	// scraped ones also have job and instance.
	recorded bool
}

// recordingRules are those alerts/ defines, with the labels they keep.
var recordingRules = map[string][]string{
	"llorch:pool_slots:sum":                          nil,
	"llorch:pool_slots_free:sum":                     nil,
	"node_id:llorch_pool_slots:sum":                  {"node_id"},
	"node_id:llorch_pool_slots_free:sum":             {"node_id"},
	"llorch:tasks:rate5m":                            {"outcome"},
	"llorch:task_time_to_first_token_seconds:p99_5m": nil,
	"llorch:task_time_to_first_token_seconds:p50_5m": nil,
	"llorch:pool_tokens_predicted:rate5m":            nil,
	"node_id:llorch_gpu_memory_used_bytes:ratio":     {"node_id"},
}

// allowedUnits are Grafana unit ids (the SDK's units package).
var allowedUnits = []string{
	units.Short, units.NoUnit, units.Seconds, units.BytesIEC, units.PercentUnit,
	units.Celsius, units.Watt, units.Hertz, units.RequestsPerSecond, units.OpsPerSecond,
}

// rateSentinel stands for $__rate_interval when parsing, so a rate over
// any other range is told apart.
const rateSentinel = "7777s"

var rateFuncs = map[string]bool{"rate": true, "irate": true, "increase": true}

type lintEnv struct {
	catalog map[string]metric
	all     []committed
	used    map[string]bool // metric names the dashboards query
}

func newLintEnv(t *testing.T, all []committed) *lintEnv {
	t.Helper()
	env := &lintEnv{catalog: loadCatalog(t, "../docs/metrics.md"), all: all, used: map[string]bool{}}
	for _, c := range all {
		for _, q := range dashboards.QueriesOf(c.model) {
			e, err := parse(q.Expr)
			if err != nil {
				continue
			}
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					env.used[vs.Name] = true
				}
				return nil
			})
		}
	}
	return env
}

var backticked = regexp.MustCompile("`([^`]+)`")

// loadCatalog reads every metric, its type and labels from the tables of
// docs/metrics.md. A row may list several names, later ones as suffixes
// of the first (`llorch_gpu_memory_total_bytes`, `_used_bytes`), and say
// "same" (+ more) for the labels of the row above.
func loadCatalog(t *testing.T, path string) map[string]metric {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cat := map[string]metric{}
	var prev map[string]bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		typ := strings.TrimSpace(cells[2])
		if typ != "gauge" && typ != "counter" && typ != "histogram" {
			continue
		}
		labels := map[string]bool{}
		if strings.HasPrefix(strings.TrimSpace(cells[3]), "same") {
			maps.Copy(labels, prev)
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[3], -1) {
			labels[m[1]] = true
		}
		prev = labels
		var first string
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			name := m[1]
			if strings.HasPrefix(name, "_") && first != "" {
				parts := strings.Split(first, "_")
				name = strings.Join(parts[:len(parts)-strings.Count(name, "_")], "_") + name
			} else if first == "" {
				first = name
			}
			if typ == "histogram" {
				bucket := maps.Clone(labels)
				bucket["le"] = true
				cat[name+"_bucket"] = metric{typ: "counter", labels: bucket}
				cat[name+"_count"] = metric{typ: "counter", labels: labels}
				cat[name+"_sum"] = metric{typ: "counter", labels: labels}
				continue
			}
			cat[name] = metric{typ: typ, labels: labels}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cat) < 50 {
		t.Fatalf("read only %d metrics from %s: has its table format changed?", len(cat), path)
	}
	for name, ls := range recordingRules {
		m := metric{typ: "gauge", labels: map[string]bool{}, recorded: true}
		for _, l := range ls {
			m.labels[l] = true
		}
		cat[name] = m
	}
	// up: Prometheus' own, with the agents' target labels from /v2/sd.
	cat["up"] = metric{typ: "gauge", labels: map[string]bool{"node_id": true, "machine_id": true}}
	return cat
}

// labelsOf a series: its own, and job and instance where scraped.
func (m metric) labelsOf() map[string]bool {
	out := maps.Clone(m.labels)
	if !m.recorded {
		out["job"], out["instance"] = true, true
	}
	return out
}

func parse(expr string) (parser.Expr, error) {
	return parser.NewParser(parser.Options{}).ParseExpr(dashboards.Expand(expr, map[string]string{
		"__rate_interval": rateSentinel, "node_id": "node-1", "pool_id": "pool-0", "gpu": "0",
	}))
}

// forEachQuery calls f with each parsed target of c, where it parses.
func forEachQuery(c committed, f func(q dashboards.Query, e parser.Expr)) {
	for _, q := range dashboards.QueriesOf(c.model) {
		if e, err := parse(q.Expr); err == nil {
			f(q, e)
		}
	}
}

func where(q dashboards.Query) string { return fmt.Sprintf("panel %q target %s", q.Panel, q.RefID) }

func checkUID(_ *lintEnv, c committed) []string {
	var out []string
	if got, want := deref(c.model.Uid), wantFiles[c.file]; got != want {
		out = append(out, fmt.Sprintf("uid %q, want %q (uids are stable)", got, want))
	}
	if !slices.Contains(c.model.Tags, dashboards.Tag) {
		out = append(out, fmt.Sprintf("tags %v lack %q", c.model.Tags, dashboards.Tag))
	}
	if deref(c.model.Title) == "" || deref(c.model.Description) == "" {
		out = append(out, "no title or description")
	}
	return out
}

// checkDashboardLinks: a dashboards link by tags that lists every other
// dashboard, carrying the time range and variables.
func checkDashboardLinks(env *lintEnv, c committed) []string {
	for _, l := range c.model.Links {
		if l.Type != dashboard.DashboardLinkTypeDashboards || len(l.Tags) == 0 || !l.KeepTime || !l.IncludeVars {
			continue
		}
		var missing []string
		for _, o := range env.all {
			if o.file == c.file {
				continue
			}
			for _, tag := range l.Tags {
				if !slices.Contains(o.model.Tags, tag) {
					missing = append(missing, o.file)
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		return []string{fmt.Sprintf("the link by tags %v misses %v", l.Tags, missing)}
	}
	return []string{"no dashboards link by tag (with time range and variables) to the other dashboards"}
}

func checkTemplateDatasource(_ *lintEnv, c committed) []string {
	for _, v := range c.model.Templating.List {
		if v.Name == "datasource" {
			if v.Type != dashboard.VariableTypeDatasource || v.Query == nil || deref(v.Query.String) != "prometheus" {
				return []string{"variable datasource is not a Prometheus datasource variable"}
			}
			return nil
		}
	}
	return []string{"no datasource variable"}
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// checkTemplateVariables: query variables refresh on time-range change,
// use ${datasource}, and read a documented metric's label.
func checkTemplateVariables(env *lintEnv, c committed) []string {
	var out []string
	for _, v := range c.model.Templating.List {
		if v.Type != dashboard.VariableTypeQuery {
			continue
		}
		if v.Refresh == nil || *v.Refresh != dashboard.VariableRefreshOnTimeRangeChanged {
			out = append(out, fmt.Sprintf("variable %s does not refresh on time-range change", v.Name))
		}
		if !isDS(v.Datasource) {
			out = append(out, fmt.Sprintf("variable %s is not bound to ${datasource}", v.Name))
		}
		query := ""
		if v.Query != nil {
			query = deref(v.Query.String)
		}
		m := labelValuesRE.FindStringSubmatch(query)
		if m == nil {
			out = append(out, fmt.Sprintf("variable %s: query %q is not label_values(selector, label)", v.Name, query))
			continue
		}
		e, err := parse(m[1])
		vs, ok := e.(*parser.VectorSelector)
		if err != nil || !ok {
			out = append(out, fmt.Sprintf("variable %s: %q is not a series selector (%v)", v.Name, m[1], err))
			continue
		}
		meta, known := env.catalog[vs.Name]
		if !known {
			out = append(out, fmt.Sprintf("variable %s reads %s, which docs/metrics.md does not list", v.Name, vs.Name))
			continue
		}
		if !meta.labelsOf()[m[2]] {
			out = append(out, fmt.Sprintf("variable %s reads label %s, which %s does not have", v.Name, m[2], vs.Name))
		}
		out = append(out, unknownMatchers(env, vs, "variable "+v.Name)...)
	}
	return out
}

func isDS(r *dashboard.DataSourceRef) bool {
	return r != nil && deref(r.Type) == "prometheus" && deref(r.Uid) == "${datasource}"
}

func checkPanelDatasource(_ *lintEnv, c committed) []string {
	var out []string
	for _, p := range dashboards.Panels(c.model) {
		if !isDS(p.Datasource) {
			out = append(out, fmt.Sprintf("panel %q is not bound to ${datasource}", deref(p.Title)))
		}
	}
	return out
}

func checkTargetDatasource(_ *lintEnv, c committed) []string {
	var out []string
	for _, p := range dashboards.Panels(c.model) {
		if len(p.Targets) == 0 {
			out = append(out, fmt.Sprintf("panel %q has no query", deref(p.Title)))
		}
		for i, t := range p.Targets {
			pt, ok := dashboards.PromTarget(t)
			if !ok || !isDS(pt.Datasource) {
				out = append(out, fmt.Sprintf("panel %q target %d is not bound to ${datasource}", deref(p.Title), i))
			}
		}
	}
	return out
}

func checkTitleDescription(_ *lintEnv, c committed) []string {
	var out []string
	for _, p := range c.model.Panels {
		if p.RowPanel != nil && deref(p.RowPanel.Title) == "" {
			out = append(out, fmt.Sprintf("row %d has no title", p.RowPanel.Id))
		}
	}
	for _, p := range dashboards.Panels(c.model) {
		if deref(p.Title) == "" || deref(p.Description) == "" {
			out = append(out, fmt.Sprintf("panel %d (%q) lacks a title or description", deref(p.Id), deref(p.Title)))
		}
	}
	return out
}

func checkUnits(_ *lintEnv, c committed) []string {
	var out []string
	for _, p := range dashboards.Panels(c.model) {
		unit := ""
		if p.FieldConfig != nil {
			unit = deref(p.FieldConfig.Defaults.Unit)
		}
		if !slices.Contains(allowedUnits, unit) {
			out = append(out, fmt.Sprintf("panel %q: unit %q is not one of %v", deref(p.Title), unit, allowedUnits))
		}
	}
	return out
}

func checkPanelIDs(_ *lintEnv, c committed) []string {
	var out []string
	seen := map[uint32]bool{}
	see := func(id uint32, what string) {
		if id == 0 || seen[id] {
			out = append(out, fmt.Sprintf("%s: id %d is missing or not unique", what, id))
		}
		seen[id] = true
	}
	for _, p := range c.model.Panels {
		if p.RowPanel != nil {
			see(p.RowPanel.Id, "row "+deref(p.RowPanel.Title))
		}
	}
	for _, p := range dashboards.Panels(c.model) {
		see(deref(p.Id), "panel "+deref(p.Title))
	}
	return out
}

// checkLegend: graphs show a legend and a tooltip, and every series is
// named by its target's legend format; tables query instantly, graphs
// over the range.
func checkLegend(_ *lintEnv, c committed) []string {
	var out []string
	for _, p := range dashboards.Panels(c.model) {
		title := deref(p.Title)
		if p.Type == "timeseries" {
			o, ok := p.Options.(*timeseries.Options)
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("panel %q: no time series options", title))
			case !o.Legend.ShowLegend || (o.Legend.DisplayMode != "list" && o.Legend.DisplayMode != "table"):
				out = append(out, fmt.Sprintf("panel %q hides its legend", title))
			case o.Tooltip.Mode == "" || o.Tooltip.Mode == "none":
				out = append(out, fmt.Sprintf("panel %q has no tooltip", title))
			}
		}
		for i, t := range p.Targets {
			pt, ok := dashboards.PromTarget(t)
			if !ok {
				continue
			}
			if deref(pt.LegendFormat) == "" {
				out = append(out, fmt.Sprintf("panel %q target %d has no legend format", title, i))
			}
			instant := deref(pt.Instant) && deref(pt.Format) == "table"
			if (p.Type == "table") != instant {
				out = append(out, fmt.Sprintf("panel %q (%s) target %d: instant=%v format=%q", title, p.Type, i, deref(pt.Instant), deref(pt.Format)))
			}
		}
	}
	return out
}

var dashURLRE = regexp.MustCompile(`/d/([A-Za-z0-9_-]+)`)

// checkPanelLinks: every link to a dashboard by uid (data links) names
// one of the llorch dashboards.
func checkPanelLinks(env *lintEnv, c committed) []string {
	var out []string
	uids := map[string]bool{}
	for _, o := range env.all {
		uids[deref(o.model.Uid)] = true
	}
	for _, m := range dashURLRE.FindAllStringSubmatch(string(c.raw), -1) {
		if !uids[m[1]] {
			out = append(out, fmt.Sprintf("a link points at dashboard %q, which does not exist", m[1]))
		}
	}
	return out
}

// checkLayout: panels lie within the 24-column grid without overlapping.
func checkLayout(_ *lintEnv, c committed) []string {
	var out []string
	type box struct {
		name       string
		x, y, w, h uint32
	}
	var boxes []box
	for _, p := range c.model.Panels {
		switch {
		case p.RowPanel != nil && p.RowPanel.GridPos != nil:
			g := p.RowPanel.GridPos
			boxes = append(boxes, box{"row " + deref(p.RowPanel.Title), g.X, g.Y, g.W, g.H})
		case p.Panel != nil && p.Panel.GridPos != nil:
			g := p.Panel.GridPos
			boxes = append(boxes, box{"panel " + deref(p.Panel.Title), g.X, g.Y, g.W, g.H})
		default:
			out = append(out, "a panel has no position")
		}
	}
	for i, a := range boxes {
		if a.w == 0 || a.h == 0 || a.x+a.w > 24 {
			out = append(out, fmt.Sprintf("%s lies outside the grid: %+v", a.name, a))
		}
		for _, b := range boxes[:i] {
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				out = append(out, fmt.Sprintf("%s overlaps %s", a.name, b.name))
			}
		}
	}
	return out
}

func checkPromQL(_ *lintEnv, c committed) []string {
	var out []string
	for _, q := range dashboards.QueriesOf(c.model) {
		if _, err := parse(q.Expr); err != nil {
			out = append(out, fmt.Sprintf("%s: %q does not parse: %v", where(q), q.Expr, err))
		}
	}
	return out
}

// checkRateInterval: rate, irate and increase range over $__rate_interval.
func checkRateInterval(_ *lintEnv, c committed) []string {
	sentinel, _ := time.ParseDuration(rateSentinel)
	var out []string
	forEachQuery(c, func(q dashboards.Query, e parser.Expr) {
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			call, ok := n.(*parser.Call)
			if !ok || !rateFuncs[call.Func.Name] {
				return nil
			}
			for _, a := range call.Args {
				if ms, ok := a.(*parser.MatrixSelector); ok && ms.Range != sentinel {
					out = append(out, fmt.Sprintf("%s: %s over %v, not $__rate_interval", where(q), call.Func.Name, ms.Range))
				}
			}
			return nil
		})
	})
	return out
}

func isCounter(env *lintEnv, name string) bool {
	if m, ok := env.catalog[name]; ok {
		return m.typ == "counter"
	}
	for _, s := range []string{"_total", "_bucket", "_count", "_sum"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// checkCounters: counters (and histogram series) appear only inside
// rate, irate or increase, and those take only counters.
func checkCounters(env *lintEnv, c committed) []string {
	var out []string
	forEachQuery(c, func(q dashboards.Query, e parser.Expr) {
		parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			inRate := false
			if len(path) >= 2 {
				_, isMatrix := path[len(path)-1].(*parser.MatrixSelector)
				call, isCall := path[len(path)-2].(*parser.Call)
				inRate = isMatrix && isCall && rateFuncs[call.Func.Name]
			}
			switch counter := isCounter(env, vs.Name); {
			case counter && !inRate:
				out = append(out, fmt.Sprintf("%s: counter %s outside rate/irate/increase", where(q), vs.Name))
			case !counter && inRate:
				out = append(out, fmt.Sprintf("%s: rate of %s, which is not a counter", where(q), vs.Name))
			}
			return nil
		})
	})
	return out
}

// checkDocumented: every metric a query reads is in docs/metrics.md, a
// recording rule of alerts/, or up.
func checkDocumented(env *lintEnv, c committed) []string {
	var out []string
	forEachQuery(c, func(q dashboards.Query, e parser.Expr) {
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				if _, known := env.catalog[vs.Name]; !known {
					out = append(out, fmt.Sprintf("%s: %q is not in docs/metrics.md nor a recording rule", where(q), vs.Name))
				}
			}
			return nil
		})
	})
	return out
}

var legendLabelRE = regexp.MustCompile(`\{\{\s*([A-Za-z_]\w*)\s*\}\}`)

// checkLabels: selectors match, aggregations group by, and legends name
// only labels the series have (a wrong label silently shows nothing, or
// one series for all).
func checkLabels(env *lintEnv, c committed) []string {
	var out []string
	forEachQuery(c, func(q dashboards.Query, e parser.Expr) {
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			switch x := n.(type) {
			case *parser.VectorSelector:
				out = append(out, unknownMatchers(env, x, where(q))...)
			case *parser.AggregateExpr:
				have, ok := outLabels(env, x.Expr)
				if !ok || x.Without {
					return nil
				}
				for _, l := range x.Grouping {
					if !have[l] {
						out = append(out, fmt.Sprintf("%s: %s by %s, a label its series lack", where(q), x.Op, l))
					}
				}
			}
			return nil
		})
		if have, ok := outLabels(env, e); ok {
			for _, m := range legendLabelRE.FindAllStringSubmatch(q.Legend, -1) {
				if !have[m[1]] {
					out = append(out, fmt.Sprintf("%s: legend names {{%s}}, a label the result lacks (has %v)", where(q), m[1], slices.Sorted(maps.Keys(have))))
				}
			}
		}
	})
	return out
}

func unknownMatchers(env *lintEnv, vs *parser.VectorSelector, where string) []string {
	m, ok := env.catalog[vs.Name]
	if !ok {
		return nil // checkDocumented reports it
	}
	have := m.labelsOf()
	var out []string
	for _, lm := range vs.LabelMatchers {
		if lm.Name != "__name__" && !have[lm.Name] {
			out = append(out, fmt.Sprintf("%s: %s has no label %s", where, vs.Name, lm.Name))
		}
	}
	return out
}

// outLabels are the labels of e's result series, as far as they can be
// told; ok is false where they cannot.
func outLabels(env *lintEnv, e parser.Expr) (map[string]bool, bool) {
	switch x := e.(type) {
	case *parser.VectorSelector:
		m, ok := env.catalog[x.Name]
		if !ok {
			return nil, false
		}
		return m.labelsOf(), true
	case *parser.MatrixSelector:
		return outLabels(env, x.VectorSelector)
	case *parser.ParenExpr:
		return outLabels(env, x.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return map[string]bool{}, true
	case *parser.Call:
		switch x.Func.Name {
		case "histogram_quantile":
			ls, ok := outLabels(env, x.Args[1])
			delete(ls, "le")
			return ls, ok
		case "vector", "scalar", "time":
			return map[string]bool{}, true
		}
		if len(x.Args) == 0 {
			return nil, false
		}
		return outLabels(env, x.Args[0])
	case *parser.AggregateExpr:
		inner, ok := outLabels(env, x.Expr)
		if !ok {
			return nil, false
		}
		switch {
		case x.Op == parser.TOPK || x.Op == parser.BOTTOMK:
			return inner, true
		case x.Without:
			for _, l := range x.Grouping {
				delete(inner, l)
			}
			return inner, true
		}
		out := map[string]bool{}
		for _, l := range x.Grouping {
			out[l] = true
		}
		return out, true
	case *parser.BinaryExpr:
		lhs, lok := outLabels(env, x.LHS)
		rhs, rok := outLabels(env, x.RHS)
		if !lok || !rok {
			return nil, false
		}
		switch {
		case x.LHS.Type() != parser.ValueTypeVector:
			return rhs, true
		case x.RHS.Type() != parser.ValueTypeVector:
			return lhs, true
		case x.Op == parser.LOR:
			maps.Copy(lhs, rhs)
			return lhs, true
		case x.VectorMatching == nil:
			return lhs, true
		}
		vm := x.VectorMatching
		switch vm.Card {
		case parser.CardManyToOne, parser.CardOneToMany:
			base := lhs
			if vm.Card == parser.CardOneToMany {
				base = rhs
			}
			for _, l := range vm.Include {
				base[l] = true
			}
			return base, true
		}
		if x.Op == parser.LAND || x.Op == parser.LUNLESS {
			return lhs, true
		}
		if vm.On {
			out := map[string]bool{}
			for _, l := range vm.MatchingLabels {
				out[l] = true
			}
			return out, true
		}
		for _, l := range vm.MatchingLabels {
			delete(lhs, l)
		}
		return lhs, true
	}
	return nil, false
}

var varRefRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)`)

// checkVariablesDefined: every variable a query uses is the dashboard's
// or one of Grafana's ($__rate_interval...): an undefined one is sent as
// written and matches nothing.
func checkVariablesDefined(_ *lintEnv, c committed) []string {
	defined := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range c.model.Templating.List {
		defined[v.Name] = true
	}
	var out []string
	for _, q := range dashboards.QueriesOf(c.model) {
		for _, m := range varRefRE.FindAllStringSubmatch(q.Expr, -1) {
			if name := m[1] + m[2] + m[3]; !defined[name] {
				out = append(out, fmt.Sprintf("%s uses $%s, which the dashboard does not define", where(q), name))
			}
		}
	}
	return out
}
