// Package controlplane is orchestratord's HTTP surface: the node registry
// routes of SPEC §3 (cloud profile), Prometheus HTTP service discovery,
// /health and /metrics. It owns no state of its own; the registry does.
package controlplane
