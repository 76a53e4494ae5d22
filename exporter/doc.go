// Package exporter is the node agent's Prometheus exporter, in the style of
// node_exporter: one small Collector per source, one file each (nvml.go,
// dcgm.go, sim.go for GPUs; pools.go; engine.go), run together by an
// Exporter that reports each collector's duration and success, so a failing
// source fails only itself and is visible, never silent.
//
// Hardware is read off the scrape path: a Poller refreshes a snapshot on an
// interval and a scrape serialises the snapshot, so a stuck NVML call or a
// slow dcgm-exporter cannot block /metrics. Descriptors are built once, in
// constructors.
//
// The exporter only exports. What the agent does with the same readings
// lives with the agent: the engine poller that also writes each replica's
// load into the pool table is package enginepoll; the GPU inventory of
// registration and heartbeats, and the pools' GPU memory, are in package
// agent.
package exporter
