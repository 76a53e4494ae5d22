package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The dashboards' uids: stable, so links and bookmarks survive a
// regeneration or a re-import.
const (
	UIDFleet     = "llorch-fleet"
	UIDGPUs      = "llorch-gpus"
	UIDPlacement = "llorch-placement"
	UIDNode      = "llorch-node"
)

// Tag is on every llorch dashboard; each links to the others by it.
const Tag = "llorch"

// The Prometheus jobs of deploy/prometheus: the control plane, and the
// node agents found through its service discovery.
const (
	JobControlPlane = "llorch-orchestratord"
	JobAgents       = "llorch-agents"
)

// Model is Grafana's classic dashboard JSON model (schema v1), what this
// package generates. The SDK marks it and its builder deprecated in favour
// of dashboardv2, the schema of Grafana 12's new dashboard API, which file
// provisioning and earlier Grafanas do not load; every Grafana loads this.
type Model = dashboard.Dashboard //nolint:staticcheck // SA1019: v1 is the model every Grafana loads (above)

type dashboardBuilder = dashboard.DashboardBuilder //nolint:staticcheck // SA1019: see Model

// Dashboard is one generated dashboard and the file it is committed as.
type Dashboard struct {
	File  string // base name in dashboards/, e.g. fleet.json
	Model Model
}

// All builds every dashboard, in a stable order.
func All() ([]Dashboard, error) {
	builders := []struct {
		file  string
		build func() *dashboardBuilder
	}{
		{"fleet.json", fleet},
		{"gpus.json", gpus},
		{"placement.json", placement},
		{"node.json", node},
	}
	out := make([]Dashboard, 0, len(builders))
	for _, b := range builders {
		m, err := b.build().Build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.file, err)
		}
		for i := range m.Links {
			// The SDK defaults a link into the controls menu (Grafana 12),
			// hiding it; without placement it shows above the panels.
			m.Links[i].Placement = nil
		}
		out = append(out, Dashboard{File: b.file, Model: m})
	}
	return out, nil
}

// Marshal is a dashboard's committed form: indented JSON and a newline.
func Marshal(d Model) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep =~ and && readable in queries
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Write writes every dashboard into dir.
func Write(dir string) error {
	all, err := All()
	if err != nil {
		return err
	}
	for _, d := range all {
		b, err := Marshal(d.Model)
		if err != nil {
			return fmt.Errorf("dashboard %s: %w", d.File, err)
		}
		if err := os.WriteFile(filepath.Join(dir, d.File), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ds binds panels, targets and variables to the dashboard's datasource
// variable, never to a datasource of one Grafana.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// board builds one dashboard, numbering its panels and rows in order.
type board struct {
	b  *dashboardBuilder
	id uint32
}

func newBoard(uid, title, description string, vars ...cog.Builder[dashboard.VariableModel]) *board {
	b := dashboard.NewDashboardBuilder(title). //nolint:staticcheck // SA1019: see Model
							Uid(uid).
							Description(description).
							Tags([]string{Tag}).
							Editable().
							Tooltip(dashboard.DashboardCursorSyncCrosshair).
							Timezone("browser").
							Refresh("30s").
							Time("now-1h", "now").
							Link(dashboard.NewDashboardLinkBuilder("llorch").
								Type(dashboard.DashboardLinkTypeDashboards).
								Tags([]string{Tag}).
								Icon("external link").
								Tooltip("The other llorch dashboards").
								AsDropdown(false).
								IncludeVars(true).
								KeepTime(true)).
							WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
								Label("Data source").
								Description("The Prometheus that scrapes the llorch control plane and node agents.").
								Type("prometheus"))
	for _, v := range vars {
		b.WithVariable(v)
	}
	return &board{b: b}
}

func (b *board) next() uint32 {
	b.id++
	return b.id
}

// row starts a (never collapsed) row: the panels added after it are its.
func (b *board) row(title string) {
	b.b.WithRow(dashboard.NewRowBuilder(title).Id(b.next()))
}

func (b *board) add(p cog.Builder[dashboard.Panel]) { b.b.WithPanel(p) }

// query is one PromQL target of a panel.
type query struct {
	expr, legend string
	exemplar     bool
}

// q is a query whose series are named by legend (a Grafana legend format).
func q(expr, legend string) query { return query{expr: expr, legend: legend} }

// qx is q with the series' exemplars (trace ids) shown as points.
func qx(expr, legend string) query { return query{expr: expr, legend: legend, exemplar: true} }

func targets(qs []query, instant bool) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], 0, len(qs))
	for i, x := range qs {
		t := prometheus.NewDataqueryBuilder().
			RefId(string(rune('A' + i))).
			Datasource(ds).
			EditorMode(prometheus.QueryEditorModeCode).
			Expr(x.expr).
			LegendFormat(x.legend)
		if instant {
			t.Instant().Format(prometheus.PromQueryFormatTable)
		} else {
			t.Range().Format(prometheus.PromQueryFormatTimeSeries)
		}
		if x.exemplar {
			t.Exemplar(true)
		}
		out = append(out, t)
	}
	return out
}

// timeseries is a graph of qs, 8 wide and 8 high unless changed, with a
// legend and a shared tooltip.
func (b *board) timeseries(title, description, unit string, qs ...query) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Id(b.next()).
		Title(title).
		Description(description).
		Datasource(ds).
		Unit(unit).
		Span(8).
		Height(8).
		Targets(targets(qs, false)).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		Legend(common.NewVizLegendOptionsBuilder().
			ShowLegend(true).
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom)).
		Tooltip(common.NewVizTooltipOptionsBuilder().
			Mode(common.TooltipDisplayModeMulti).
			Sort(common.SortOrderDescending))
}

// stat shows the latest value of each series of qs, named by its legend,
// 4 wide and 4 high unless changed.
func (b *board) stat(title, description, unit string, qs ...query) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Id(b.next()).
		Title(title).
		Description(description).
		Datasource(ds).
		Unit(unit).
		Span(4).
		Height(4).
		Targets(targets(qs, false)).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)).
		GraphMode(common.BigValueGraphModeArea).
		ColorMode(common.BigValueColorModeValue).
		JustifyMode(common.BigValueJustifyModeAuto).
		TextMode(common.BigValueTextModeValueAndName).
		Orientation(common.VizOrientationAuto).
		Thresholds(thresholds("green"))
}

// table joins instant queries qs on their labels (Grafana's merge): one
// row per label set, one column per query (Value #A, Value #B...).
func (b *board) table(title, description, unit string, qs ...query) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Id(b.next()).
		Title(title).
		Description(description).
		Datasource(ds).
		Unit(unit).
		Span(24).
		Height(8).
		Targets(targets(qs, true)).
		ShowHeader(true).
		CellHeight(common.TableCellHeightSm).
		// The SDK's default footer has a null reducer, which its own
		// strict decoder (and Grafana's schema) refuses.
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}).CountRows(false)).
		Thresholds(thresholds("green"))
}

// step is a threshold: from value on, colour.
type step struct {
	value float64
	color string
}

// thresholds colours values base, then each step's colour from its value.
func thresholds(base string, steps ...step) *dashboard.ThresholdsConfigBuilder {
	t := thresholdsValue(base, steps...)
	return dashboard.NewThresholdsConfigBuilder().Mode(t.Mode).Steps(t.Steps)
}

// thresholdsValue is thresholds as a field override's value.
func thresholdsValue(base string, steps ...step) dashboard.ThresholdsConfig {
	ts := []dashboard.Threshold{{Color: base}}
	for _, s := range steps {
		ts = append(ts, dashboard.Threshold{Value: cog.ToPtr(s.value), Color: s.color})
	}
	return dashboard.ThresholdsConfig{Mode: dashboard.ThresholdsModeAbsolute, Steps: ts}
}

// valueText maps numeric values to text and colour, e.g. 0 → down (red).
func valueText(pairs ...[3]string) []dashboard.ValueMapping {
	opts := map[string]dashboard.ValueMappingResult{}
	for i, p := range pairs {
		opts[p[0]] = dashboard.ValueMappingResult{Text: cog.ToPtr(p[1]), Color: cog.ToPtr(p[2]), Index: cog.ToPtr(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: opts}}}
}

// upDown is the mapping of a 0/1 health gauge.
func upDown() []dashboard.ValueMapping {
	return valueText([3]string{"0", "down", "red"}, [3]string{"1", "up", "green"})
}

func prop(id string, v any) dashboard.DynamicConfigValue {
	return dashboard.DynamicConfigValue{Id: id, Value: v}
}

// merge and organize are the transformations of a table of instant
// queries: one row per label set, without the time column and the
// labels in hide.
func merge() dashboard.DataTransformerConfig {
	return dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}
}

func organize(hide ...string) dashboard.DataTransformerConfig {
	ex := map[string]bool{"Time": true}
	for _, h := range hide {
		ex[h] = true
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{"excludeByName": ex}}
}

// dashedLimit draws the series whose legend ends in "limit" dashed and
// unfilled, a reference line.
func dashedLimit(p *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return p.OverrideByRegexp(".*limit$", []dashboard.DynamicConfigValue{
		prop("custom.lineStyle", map[string]any{"fill": "dash", "dash": []int{10, 10}}),
		prop("custom.fillOpacity", 0),
	})
}

// stacked stacks a graph's series.
func stacked(p *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return p.Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal).Group("A")).FillOpacity(30)
}

// Variables: node_id and pool_id come from series every agent exports
// whatever its GPUs and engines (a variable built from a metric some nodes
// lack would hide them).

func nodeVar(multi bool) *dashboard.QueryVariableBuilder {
	v := queryVar("node_id", "Node", "The node agents (node_id) to show.",
		`label_values(llorch_scrape_collector_success, node_id)`)
	if multi {
		v.Multi(true).IncludeAll(true).AllValue(".*")
	}
	return v
}

func poolVar(nodeMatcher string) *dashboard.QueryVariableBuilder {
	return queryVar("pool_id", "Pool", "The pools (pool_id) to show, on the nodes chosen.",
		`label_values(llorch_pool_ready{node_id`+nodeMatcher+`}, pool_id)`).
		Multi(true).IncludeAll(true).AllValue(".*")
}

func gpuVar() *dashboard.QueryVariableBuilder {
	return queryVar("gpu", "GPU", "The GPU indices to show, on the nodes chosen.",
		`label_values(llorch_gpu_info{node_id=~"$node_id"}, gpu)`).
		Multi(true).IncludeAll(true).AllValue(".*")
}

func queryVar(name, label, description, query string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Description(description).
		Datasource(ds).
		Query(dashboard.StringOrMap{String: cog.ToPtr(query)}).
		Definition(query).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortNaturalAsc)
}
