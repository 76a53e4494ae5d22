// Package jaeger pins the Jaeger release the end-to-end tests run (v2,
// all-in-one), as a Go tool of its own module so its many dependencies
// never enter llorch's module graph. Build it with `make tools`.
package jaeger
