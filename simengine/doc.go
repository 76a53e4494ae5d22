// Package simengine is a llama.cpp-compatible engine simulator: an HTTP
// server that speaks llama-server's protocol (health, slots, metrics, props,
// models, tokenize, /completion and the OpenAI routes, streaming or not)
// with configurable load time, prompt and generation rates, per-slot
// concurrency with deferred requests, and output that is deterministic for a
// seed. Its responses have the shape of the recordings in
// ../shared/fixtures/llama-server, key for key.
//
// Locking: one mutex guards the slot table and counters; token generation
// runs outside it, in the request's goroutine.
package simengine
