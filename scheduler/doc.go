// Package scheduler places a task on a pool, in the shape of the Kubernetes
// scheduler framework: Filter plugins drop pools that cannot take the task,
// Score plugins rate the rest 0-100, the framework multiplies each score by
// its plugin's weight, sums, and ranks with a deterministic tie-break.
//
// Plugins never see their weights. The per-candidate components the
// framework computes are the explanation: GET /v2/placement/explain and the
// placement span report them, with no second computation.
//
// The hot path allocates once per decision (the candidate and score
// slices, sized up front); request-derived data is computed once, before
// the plugins run.
package scheduler
