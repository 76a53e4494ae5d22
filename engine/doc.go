// Package engine is llorch's client of llama.cpp's llama-server, written
// against recorded responses (../shared/fixtures/llama-server): health
// (503 while loading), slots, Prometheus metrics (llamacpp:* names), props,
// and the two streaming protocols — POST /completion (bare data lines, a
// final chunk with stop:true and timings) and POST /v1/chat/completions
// (OpenAI chunks ending in [DONE]).
//
// llama-server closes the connection after a stream even though it said
// keep-alive; streaming requests therefore never reuse their connection.
package engine
