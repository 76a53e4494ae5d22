// Package controlplane is orchestratord's HTTP surface: the node registry
// routes of SPEC §3 (cloud profile) and Prometheus HTTP service discovery;
// the task API (POST /v2/tasks, its event streams, cancel), placement
// explanations and the OpenAI-compatible routes, which hand tasks to the
// dispatcher (package dispatch); /health and /metrics. It keeps no state
// of its own beyond a cache of the served models: the registry holds the
// fleet, the dispatcher the queue and the pools' books, the task store the
// events.
package controlplane
