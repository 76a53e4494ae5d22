// Package controlplane is orchestratord: the Daemon that assembles the
// whole control plane from a Config (the node registry in the CLOUD
// profile or the local handoff directory in HOME, utilisation for
// placement, the dispatcher, the task runner and OpenAI proxy, the task
// store, metrics, tracing and the HTTP server) and runs it until its
// context ends, then drains (see Daemon.Run); and its HTTP surface: the
// node registry routes of SPEC §3 (cloud profile) and Prometheus HTTP
// service discovery; the task API (POST /v2/tasks, its event streams,
// cancel), placement explanations and the OpenAI-compatible routes, which
// hand tasks to the dispatcher (package dispatch); /health and /metrics.
//
// The handler keeps no state of its own beyond a cache of the served
// models: the registry holds the fleet, the dispatcher the queue, the
// pools' books and whether admission is closed, the task store the
// events. cmd/orchestratord only turns flags into a Config.
package controlplane
