package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// gpuSel selects the GPUs chosen by the node_id and gpu variables.
const gpuSel = `{node_id=~"$node_id", gpu=~"$gpu"}`

// gpuLegend names a GPU series.
const gpuLegend = "{{node_id}} GPU {{gpu}}"

// gpus answers: are the GPU readings fresh, and how full, busy, hot and
// healthy is each GPU?
func gpus() *dashboardBuilder {
	b := newBoard(UIDGPUs, "llorch / GPUs",
		"Every GPU of the chosen nodes, as the node agents read them (NVML, dcgm-exporter or simulated): memory, load, power, thermals and errors.",
		nodeVar(true), gpuVar())

	b.row("Readings")
	b.add(b.stat("GPU source up",
		"1 if the node's GPU source (nvml, dcgm, sim) answered and its readings are fresh. A source that hangs or fails ages out to 0: the GPU panels then show stale or no data for that node.",
		units.NoUnit,
		q(`llorch_gpu_source_up{node_id=~"$node_id"}`, "{{node_id}} {{source}}")).
		Mappings(upDown()).
		Thresholds(thresholds("red", step{1, "green"})).
		Span(8))
	b.add(b.timeseries("GPU data age",
		"Age of each node's exported GPU readings: the agent reads the GPUs off the scrape path, so a hung driver shows as a growing age, not a slow scrape.",
		units.Seconds,
		q(`llorch_gpu_source_data_age_seconds{node_id=~"$node_id"}`, "{{node_id}} {{source}}")).Min(0))
	b.add(b.timeseries("Memory used by node",
		"GPU memory used over all of a node's GPUs, as a share of their total (driver-reserved memory counts as neither).",
		units.PercentUnit,
		q(`node_id:llorch_gpu_memory_used_bytes:ratio{node_id=~"$node_id"}`, "{{node_id}}")).Min(0).Max(1))
	b.add(b.table("GPUs",
		"The GPUs of the chosen nodes: index, model, UUID and compute capability.",
		units.NoUnit,
		q(`llorch_gpu_info`+gpuSel, "{{node_id}} GPU {{gpu}}")).
		Transformations([]dashboard.DataTransformerConfig{organize("Value", "__name__", "job", "instance")}).
		Height(6))

	b.row("Memory")
	b.add(b.timeseries("Memory used",
		"GPU memory used by processes (NVML v2: excludes driver-reserved memory).",
		units.BytesIEC,
		q(`llorch_gpu_memory_used_bytes`+gpuSel, gpuLegend)).Min(0))
	b.add(b.timeseries("Memory reserved",
		"GPU memory the driver reserves (an idle H200 reserves about 615 MiB).",
		units.BytesIEC,
		q(`llorch_gpu_memory_reserved_bytes`+gpuSel, gpuLegend)).Min(0))
	b.add(b.timeseries("Memory free",
		"GPU memory free for new engines: total less used less reserved.",
		units.BytesIEC,
		q(`llorch_gpu_memory_free_bytes`+gpuSel, gpuLegend)).Min(0))

	b.row("Load")
	b.add(b.timeseries("Utilisation",
		"Share of time a kernel ran on the GPU.",
		units.PercentUnit,
		q(`llorch_gpu_utilization_ratio`+gpuSel, gpuLegend)).Min(0).Max(1))
	b.add(b.timeseries("Memory utilisation",
		"Share of time GPU memory was read or written.",
		units.PercentUnit,
		q(`llorch_gpu_memory_utilization_ratio`+gpuSel, gpuLegend)).Min(0).Max(1))
	b.add(b.timeseries("Compute processes",
		"Compute processes on the GPU: normally the engines placed on it. A process nobody accounts for takes memory placement does not expect.",
		units.Short,
		q(`llorch_gpu_compute_processes`+gpuSel, gpuLegend)).Min(0))

	b.row("Power and thermals")
	b.add(b.timeseries("Temperature",
		"GPU core temperature.",
		units.Celsius,
		q(`llorch_gpu_temperature_celsius`+gpuSel, gpuLegend)))
	b.add(dashedLimit(b.timeseries("Power against limit",
		"Power drawn by each GPU, with its enforced power limit dashed: a GPU at its limit is power-throttled.",
		units.Watt,
		q(`llorch_gpu_power_watts`+gpuSel, gpuLegend),
		q(`llorch_gpu_power_limit_watts`+gpuSel, gpuLegend+" limit"))).Min(0))
	b.add(b.timeseries("SM clock",
		"Streaming multiprocessor clock: a drop under load is thermal or power throttling.",
		units.Hertz,
		q(`llorch_gpu_sm_clock_hertz`+gpuSel, gpuLegend)).Min(0))

	b.row("Errors")
	b.add(b.timeseries("Uncorrected ECC errors",
		"New volatile uncorrected ECC errors per interval. Any is a reason to drain the node and check the GPU.",
		units.Short,
		q(`increase(llorch_gpu_ecc_uncorrected_errors_total`+gpuSel+`[$__rate_interval])`, gpuLegend)).
		Min(0).Span(12))
	b.add(b.timeseries("Last XID error",
		"Code of the GPU's last XID error, 0 for none (dcgm-exporter and simulated GPUs; NVML does not report it). A change marks a new driver-reported fault.",
		units.NoUnit,
		q(`llorch_gpu_last_xid`+gpuSel, gpuLegend)).
		Min(0).Span(12))
	return b.b
}
