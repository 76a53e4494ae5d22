package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// fleet answers: is the fleet up, does it have room, and is it keeping
// up with the traffic (queue, outcomes, time to first token, tokens/s)?
func fleet() *dashboardBuilder {
	b := newBoard(UIDFleet, "llorch / Fleet",
		"The whole llorch fleet: nodes and their status, free capacity, admission, task outcomes, time to first token and throughput.")

	// Registry gauges are the same on every replica of a scaled-out control
	// plane (--registry etcd): max, not sum, counts each node once.
	b.row("Overview")
	b.add(b.stat("Nodes by status",
		"Registered nodes by status, as the control plane's registry sees them: online, draining, or offline (no heartbeat within --node-timeout).",
		units.Short,
		q(`max by (status) (llorch_nodes)`, "{{status}}")).
		OverrideByName("offline", []dashboard.DynamicConfigValue{
			prop("thresholds", thresholdsValue("green", step{1, "red"})),
		}).
		OverrideByName("draining", []dashboard.DynamicConfigValue{
			prop("thresholds", thresholdsValue("green", step{1, "yellow"})),
		}))
	b.add(b.stat("Pools available",
		"Pools the control plane can place on: ready, not draining, on online nodes.",
		units.Short,
		q(`max(llorch_pools_available)`, "pools")).
		Thresholds(thresholds("red", step{1, "green"})))
	b.add(b.stat("Slots free",
		"Engine slots free over the fleet, against all slots: when free reaches 0, new tasks wait in the admission queue.",
		units.Short,
		q(`llorch:pool_slots_free:sum`, "free"),
		q(`llorch:pool_slots:sum`, "total")))
	b.add(b.stat("Scrape targets up",
		"Prometheus targets answering, by job: the control plane and the node agents it lists for discovery (offline nodes stay listed, so they count as down).",
		units.Short,
		q(`sum by (job) (up{job=~"`+JobControlPlane+`|`+JobAgents+`"})`, "{{job}} up"),
		q(`count by (job) (up{job=~"`+JobControlPlane+`|`+JobAgents+`"})`, "{{job}} targets")))
	b.add(b.stat("Time to first token (5m)",
		"Median and 99th percentile time from admission to the first token, over the last 5 minutes, all pools.",
		units.Seconds,
		q(`llorch:task_time_to_first_token_seconds:p50_5m`, "p50"),
		q(`llorch:task_time_to_first_token_seconds:p99_5m`, "p99")))
	b.add(b.stat("Tokens generated (5m)",
		"Tokens the fleet's engines generate per second, averaged over the last 5 minutes.",
		units.Short,
		q(`llorch:pool_tokens_predicted:rate5m`, "tokens/s")))

	b.row("Nodes")
	b.add(b.table("Nodes",
		"One row per node: its status in the control plane's registry, the age of its last heartbeat, its pools (ready of all), its slots (free of all) and GPUs. Click a node for its dashboard.",
		units.Short,
		q(`max by (node_id) (llorch_node_status{status="online"} * 1 or llorch_node_status{status="draining"} * 2 or llorch_node_status{status="offline"} * 3)`, "status"),
		q(`max by (node_id) (llorch_node_heartbeat_age_seconds)`, "heartbeat age"),
		q(`sum by (node_id) (llorch_pool_ready)`, "pools ready"),
		q(`count by (node_id) (llorch_pool_ready)`, "pools"),
		q(`node_id:llorch_pool_slots_free:sum`, "slots free"),
		q(`node_id:llorch_pool_slots:sum`, "slots"),
		q(`count by (node_id) (llorch_gpu_info)`, "GPUs")).
		Transformations([]dashboard.DataTransformerConfig{merge(), organize()}).
		OverrideByName("node_id", []dashboard.DynamicConfigValue{
			prop("displayName", "node"),
			prop("links", []map[string]any{{
				"title": "Node ${__value.raw}",
				"url":   "/d/" + UIDNode + "?var-node_id=${__value.raw}&var-datasource=${datasource}&${__url_time_range}",
			}}),
		}).
		OverrideByName("Value #A", []dashboard.DynamicConfigValue{
			prop("displayName", "status"),
			prop("mappings", valueText(
				[3]string{"1", "online", "green"},
				[3]string{"2", "draining", "yellow"},
				[3]string{"3", "offline", "red"})),
			prop("custom.cellOptions", map[string]any{"type": "color-text"}),
		}).
		OverrideByName("Value #B", []dashboard.DynamicConfigValue{
			prop("displayName", "heartbeat age"), prop("unit", units.Seconds),
		}).
		OverrideByName("Value #C", []dashboard.DynamicConfigValue{prop("displayName", "pools ready")}).
		OverrideByName("Value #D", []dashboard.DynamicConfigValue{prop("displayName", "pools")}).
		OverrideByName("Value #E", []dashboard.DynamicConfigValue{prop("displayName", "slots free")}).
		OverrideByName("Value #F", []dashboard.DynamicConfigValue{prop("displayName", "slots")}).
		OverrideByName("Value #G", []dashboard.DynamicConfigValue{prop("displayName", "GPUs")}))

	b.row("Capacity")
	b.add(stacked(b.timeseries("Slots busy and free",
		"Engine slots over the fleet: busy ones serve a task, free ones can take the next. The stack is the fleet's capacity.",
		units.Short,
		q(`llorch:pool_slots:sum - llorch:pool_slots_free:sum`, "busy"),
		q(`llorch:pool_slots_free:sum`, "free"))).Min(0).Span(12))
	b.add(b.timeseries("Pools available and nodes by status",
		"Pools the control plane can place on, and registered nodes by status over time.",
		units.Short,
		q(`max(llorch_pools_available)`, "pools available"),
		q(`max by (status) (llorch_nodes)`, "nodes {{status}}")).Min(0).Span(12))

	b.row("Traffic")
	b.add(b.timeseries("Admission queue depth",
		"Tasks admitted and waiting for a pool, by priority. A queue that grows while slots are free points at placement (filters, breakers); while none are free, at capacity.",
		units.Short,
		q(`sum by (priority) (llorch_admission_queue_depth)`, "{{priority}}")).Min(0))
	b.add(stacked(b.timeseries("Tasks by outcome",
		"Tasks that ended per second (5-minute rate), by outcome: completed, cancelled by the client, worker_reset, engine_error, rejected, evicted, deadline, unavailable.",
		units.RequestsPerSecond,
		q(`llorch:tasks:rate5m`, "{{outcome}}"))).Min(0))
	b.add(b.timeseries("Admission rejections",
		"Tasks refused at admission per second: rejected when the queue is full, evicted when the oldest batch task is dropped to make room (--admission-policy drop-lru).",
		units.RequestsPerSecond,
		q(`sum by (outcome) (rate(llorch_admission_total{outcome=~"rejected|evicted"}[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Time to first token",
		"Median and 99th percentile time from admission to the first token sent, all pools. Points are exemplars: sampled tasks, each opening its trace.",
		units.Seconds,
		q(`histogram_quantile(0.5, sum by (le) (rate(llorch_task_time_to_first_token_seconds_bucket[$__rate_interval])))`, "p50"),
		qx(`histogram_quantile(0.99, sum by (le) (rate(llorch_task_time_to_first_token_seconds_bucket[$__rate_interval])))`, "p99")).
		Min(0).Span(12))
	b.add(b.timeseries("Tokens per second",
		"Tokens the fleet's engines generate per second (5-minute rate), and prompt tokens they process.",
		units.Short,
		q(`llorch:pool_tokens_predicted:rate5m`, "generated"),
		q(`sum(rate(llorch_pool_prompt_tokens_total[$__rate_interval]))`, "prompt")).
		AxisLabel("tokens/s").Min(0).Span(12))

	b.row("Registry")
	b.add(b.timeseries("Heartbeats received",
		"Heartbeats the control plane receives per second, by outcome. unknown_node makes the agent register again (e.g. after a control plane restart); invalid ones are refused.",
		units.RequestsPerSecond,
		q(`sum by (outcome) (rate(llorch_node_heartbeats_total[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Registrations received",
		"Node registrations the control plane receives, by outcome, per interval.",
		units.Short,
		q(`sum by (outcome) (increase(llorch_node_registrations_total[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Node status changes",
		"Node status changes per interval: from=none is a first registration, to=deregistered a removal, to=offline a node that stopped heartbeating.",
		units.Short,
		q(`sum by (from, to) (increase(llorch_node_status_transitions_total[$__rate_interval]))`, "{{from}} → {{to}}")).Min(0))
	return b.b
}
