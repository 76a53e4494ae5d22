// Package dashboards builds llorch's Grafana dashboards as code, with the
// grafana-foundation-sdk, and owns the JSON files committed beside it:
//
//	fleet.json      uid llorch-fleet      is the fleet healthy and keeping up?
//	gpus.json       uid llorch-gpus       how are the GPUs of each node doing?
//	placement.json  uid llorch-placement  where do tasks go, how fast, and why?
//	node.json       uid llorch-node       one node in detail
//
// `make dashboards` (go run ./dashboards/generate) regenerates the files
// from All; a test fails when a committed file differs from what the code
// builds. The tests also decode every file strictly with the SDK, parse
// every query with Prometheus' PromQL parser, check every metric and label
// a query uses against docs/metrics.md (and the recording rules of
// alerts/), and enforce the rules of Grafana's dashboard-linter: a
// ${datasource} variable on every panel and target, a title, description
// and unit on every panel, $__rate_interval in every rate, counters only
// inside rate/increase, template variables refreshed on time-range change,
// stable uids, and links between the dashboards.
//
// Every dashboard has a `datasource` variable (Prometheus); those that
// filter by node or pool have multi-value `node_id` / `pool_id` variables
// (the node dashboard a single `node_id`). Queries use the variables as
// Grafana writes them: `$node_id`, `$pool_id`, `$gpu`, `$__rate_interval`.
//
// For tests that run the queries against a real Prometheus, Queries lists
// every panel's PromQL target (dashboard uid, panel title, refId, the
// expression with its variables, legend, instant or range, exemplars),
// Variables the label_values() queries of the template variables, and
// Expand substitutes the variables as Grafana would:
//
//	qs, err := dashboards.Queries()
//	for _, q := range qs {
//		expr := dashboards.Expand(q.Expr, map[string]string{"node_id": "node-1"})
//		// query Prometheus with expr: instant when q.Instant, else a range
//	}
//
// Expand puts 1m for $__rate_interval and .* (the All value) for a
// variable it is not given. QueriesOf does the same for a decoded
// dashboard (e.g. a committed file).
//
// Some panels read recording rules that alerts/ defines
// (llorch:pool_slots:sum, node_id:llorch_pool_slots_free:sum,
// llorch:tasks:rate5m, llorch:task_time_to_first_token_seconds:p99_5m...):
// they show "No data" on a Prometheus without llorch's rules.
package dashboards
