// Package loadgen is an open-loop load generator for OpenAI-compatible
// streaming endpoints (orchestratord, llama-server, a proxy in front of
// them).
//
// Arrivals are a Poisson process drawn from a seeded RNG: the same Config
// (rate, duration, seed, sizes) gives the same arrival times and the same
// requests, so several targets can be offered the identical load. Each
// arrival sends one streaming chat completion on its own goroutine, through
// one shared keep-alive http.Client; the arrival clock never waits for a
// response, so a slow target cannot slow the offered load (the open-loop
// property a closed-loop benchmark lacks: under overload, latency grows
// instead of the load shrinking).
//
// Per request it records the time to the first content token (the first
// "data:" chunk whose choices[0].delta.content, or choices[0].text, is not
// empty), the end-to-end latency (until "data: [DONE]"), the tokens
// received and the outcome:
//   - OK: 200 and the stream reached [DONE];
//   - Rejected: 429 (admission control said no);
//   - Failed: a transport error, another non-200 status, a stream cut
//     before [DONE], an "event: error" or a chunk carrying "error";
//   - Unfinished: still running at the hard deadline (Duration + Grace),
//     and cancelled there.
//
// Result summarises a run: counts, p50/p90/p99/max of TTFT and latency over
// completed requests, and throughput (completed requests and their tokens
// per second of the run).
package loadgen
