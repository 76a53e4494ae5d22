package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// Selectors of the node dashboard: the one node, and its chosen pools.
const (
	nodeSel     = `{node_id="$node_id"}`
	nodePoolSel = `{node_id="$node_id", pool_id=~"$pool_id"}`
)

// node answers, for one node: is it registered and heartbeating, are its
// GPUs, pools and engines healthy, and is its agent working (handoff
// files, heartbeats, registration, scrape cost)?
func node() *dashboardBuilder {
	b := newBoard(UIDNode, "llorch / Node",
		"One node in detail: its status in the registry, its GPUs, pools and engines, and its agent's own work (handoff files, heartbeats, registration, scrape cost).",
		nodeVar(false), poolVar(`="$node_id"`))

	b.row("Node")
	b.add(b.stat("Status",
		"The node's status in the control plane's registry: online, draining, or offline (no heartbeat within --node-timeout).",
		units.NoUnit,
		q(`max by (status) (llorch_node_status`+nodeSel+`) == 1`, "{{status}}")).
		TextMode(common.BigValueTextModeName).
		GraphMode(common.BigValueGraphModeNone).
		OverrideByName("online", []dashboard.DynamicConfigValue{prop("color", fixed("green"))}).
		OverrideByName("draining", []dashboard.DynamicConfigValue{prop("color", fixed("yellow"))}).
		OverrideByName("offline", []dashboard.DynamicConfigValue{prop("color", fixed("red"))}).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdFixed).FixedColor("text")))
	b.add(b.stat("Heartbeat age",
		"Seconds since the control plane last heard the node's heartbeat (or registration), against the node timeout.",
		units.Seconds,
		q(`llorch_node_heartbeat_age_seconds`+nodeSel, "age"),
		q(`llorch_node_timeout_seconds`, "timeout")))
	b.add(b.stat("Heartbeat interval",
		"The node's heartbeat interval as the control plane observes it (a moving average of the gaps between heartbeats).",
		units.Seconds,
		q(`llorch_node_heartbeat_interval_seconds`+nodeSel, "interval")))
	b.add(b.stat("Registered",
		"The agent's own registration state (cloud profile): up while it is registered with the control plane.",
		units.NoUnit,
		q(`llorch_agent_registered`+nodeSel, "registered")).
		Mappings(valueText([3]string{"0", "no", "red"}, [3]string{"1", "yes", "green"})).
		Thresholds(thresholds("red", step{1, "green"})))
	b.add(b.stat("Agent scraped",
		"Whether Prometheus reaches the agent's /metrics (the up series of its scrape target).",
		units.NoUnit,
		q(`up{job="`+JobAgents+`", node_id="$node_id"}`, "up")).
		Mappings(upDown()).
		Thresholds(thresholds("red", step{1, "green"})))
	b.add(b.stat("GPU source",
		"1 if the agent's GPU source (nvml, dcgm, sim, none) answered and its readings are fresh.",
		units.NoUnit,
		q(`llorch_gpu_source_up`+nodeSel, "{{source}}")).
		Mappings(upDown()).
		Thresholds(thresholds("red", step{1, "green"})))

	b.row("GPUs")
	b.add(b.timeseries("GPU utilisation",
		"Share of time a kernel ran on each GPU of the node.",
		units.PercentUnit,
		q(`llorch_gpu_utilization_ratio`+nodeSel, "GPU {{gpu}}")).Min(0).Max(1).Span(6))
	b.add(dashedLimit(b.timeseries("GPU memory used",
		"GPU memory used by processes on each GPU (excludes driver-reserved memory), and each GPU's total, dashed.",
		units.BytesIEC,
		q(`llorch_gpu_memory_used_bytes`+nodeSel, "GPU {{gpu}}"),
		q(`llorch_gpu_memory_total_bytes`+nodeSel, "GPU {{gpu}} limit"))).Min(0).Span(6))
	b.add(b.timeseries("GPU temperature",
		"Core temperature of each GPU of the node.",
		units.Celsius,
		q(`llorch_gpu_temperature_celsius`+nodeSel, "GPU {{gpu}}")).Span(6))
	b.add(dashedLimit(b.timeseries("GPU power",
		"Power drawn by each GPU, with its enforced limit dashed.",
		units.Watt,
		q(`llorch_gpu_power_watts`+nodeSel, "GPU {{gpu}}"),
		q(`llorch_gpu_power_limit_watts`+nodeSel, "GPU {{gpu}} limit"))).Min(0).Span(6))

	b.row("Pools")
	b.add(b.timeseries("Pools ready and draining",
		"1 while a handoff file announces a ready engine replica for the pool (ready), and while the pool drains (draining).",
		units.Short,
		q(`llorch_pool_ready`+nodePoolSel, "{{pool_id}} ready"),
		q(`llorch_pool_draining`+nodePoolSel, "{{pool_id}} draining")).Min(0).Max(1))
	b.add(b.timeseries("Slots busy and free",
		"Engine slots per pool: busy ones process a request, free ones can take the next.",
		units.Short,
		q(`llorch_pool_slots_busy`+nodePoolSel, "{{pool_id}} busy"),
		q(`llorch_pool_slots_free`+nodePoolSel, "{{pool_id}} free")).Min(0))
	b.add(dashedLimit(b.timeseries("Pool GPU memory",
		"Free GPU memory of each pool's GPUs (its device mask), against their total, dashed.",
		units.BytesIEC,
		q(`llorch_pool_vram_free_bytes`+nodePoolSel, "{{pool_id}} free"),
		q(`llorch_pool_vram_total_bytes`+nodePoolSel, "{{pool_id}} total limit"))).Min(0))

	b.row("Engines")
	b.add(b.timeseries("Engine up",
		"1 while the supervised engine runs and is announced ready.",
		units.NoUnit,
		q(`llorch_engine_up`+nodePoolSel, "{{pool_id}}")).
		Mappings(upDown()).Min(0).Max(1).Span(6))
	b.add(b.timeseries("Engine endpoints",
		"Whether each engine answered /metrics and /slots at the agent's last poll. metrics down: no queue or token counters; slots down: llama-server --no-slots, busy slots come from requests_processing.",
		units.NoUnit,
		q(`llorch_pool_engine_endpoint_up`+nodePoolSel, "{{pool_id}} {{endpoint}}")).
		Mappings(upDown()).Min(0).Max(1).Span(6))
	b.add(b.timeseries("Engine restarts and breakers",
		"Engine failures that led to a restart, per interval, and 1 while the engine's circuit breaker is open.",
		units.Short,
		q(`increase(llorch_engine_restarts_total`+nodePoolSel+`[$__rate_interval])`, "{{pool_id}} restarts"),
		q(`llorch_engine_breaker_open`+nodePoolSel, "{{pool_id}} breaker open")).Min(0).Span(6))
	b.add(b.timeseries("Engine queue",
		"Requests each engine processes, and holds deferred waiting for a slot.",
		units.Short,
		q(`llorch_pool_requests_processing`+nodePoolSel, "{{pool_id}} processing"),
		q(`llorch_pool_requests_deferred`+nodePoolSel, "{{pool_id}} deferred")).Min(0).Span(6))
	b.add(b.timeseries("Tokens per second",
		"Tokens each pool's engines generate, and prompt tokens they process, per second.",
		units.Short,
		q(`rate(llorch_pool_tokens_predicted_total`+nodePoolSel+`[$__rate_interval])`, "{{pool_id}} generated"),
		q(`rate(llorch_pool_prompt_tokens_total`+nodePoolSel+`[$__rate_interval])`, "{{pool_id}} prompt")).
		AxisLabel("tokens/s").Min(0).Span(12))
	b.add(b.timeseries("Per-slot speed",
		"One slot's speed per pool: generated tokens over slot-seconds generating, and prompt tokens over seconds processing prompts.",
		units.Short,
		q(`rate(llorch_pool_tokens_predicted_total`+nodePoolSel+`[$__rate_interval]) / rate(llorch_pool_tokens_predicted_seconds_total`+nodePoolSel+`[$__rate_interval])`, "{{pool_id}} generation"),
		q(`rate(llorch_pool_prompt_tokens_total`+nodePoolSel+`[$__rate_interval]) / rate(llorch_pool_prompt_seconds_total`+nodePoolSel+`[$__rate_interval])`, "{{pool_id}} prompt")).
		AxisLabel("tokens/s").Min(0).Span(12))

	b.row("Agent")
	b.add(b.timeseries("Handoff file events",
		"Handoff file events the agent handled per second, by outcome: ok, removed, and the broken ones (invalid, too_large, read_error).",
		units.OpsPerSecond,
		q(`sum by (outcome) (rate(llorch_handoff_files_processed_total`+nodeSel+`[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Handoff processing time",
		"From noticing a handoff file change to the pool table reflecting it: median and 99th percentile.",
		units.Seconds,
		q(`histogram_quantile(0.5, sum by (le) (rate(llorch_handoff_processing_seconds_bucket`+nodeSel+`[$__rate_interval])))`, "p50"),
		q(`histogram_quantile(0.99, sum by (le) (rate(llorch_handoff_processing_seconds_bucket`+nodeSel+`[$__rate_interval])))`, "p99")).Min(0))
	b.add(b.timeseries("Heartbeats sent",
		"Heartbeats the agent sent per second, by outcome (cloud profile): error when the control plane could not be reached, unknown_node when it did not know the node (the agent registers again).",
		units.RequestsPerSecond,
		q(`sum by (outcome) (rate(llorch_heartbeat_sent_total`+nodeSel+`[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Registration attempts",
		"The agent's registration attempts per interval, by outcome (cloud profile).",
		units.Short,
		q(`sum by (outcome) (increase(llorch_agent_registrations_total`+nodeSel+`[$__rate_interval]))`, "{{outcome}}")).Min(0))
	b.add(b.timeseries("Scrape cost per collector",
		"Time each of the agent's collectors (gpu, pools, engine) took to serve a scrape of /metrics.",
		units.Seconds,
		q(`llorch_scrape_collector_duration_seconds`+nodeSel, "{{collector}}")).Min(0))
	b.add(b.timeseries("Collector success",
		"1 if the collector succeeded during the last scrape (one with no data yet counts as a success); 0 when it failed, e.g. the GPU source returned an error.",
		units.NoUnit,
		q(`llorch_scrape_collector_success`+nodeSel, "{{collector}}")).
		Mappings(upDown()).Min(0).Max(1))
	return b.b
}

// fixed is a fixed field colour, as an override's value.
func fixed(color string) map[string]any {
	return map[string]any{"mode": "fixed", "fixedColor": color}
}
