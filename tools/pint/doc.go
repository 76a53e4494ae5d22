// Package pint pins the pint release (Cloudflare's Prometheus rule linter)
// that `make lint` runs over alerts/, as a Go tool of its own module so its
// dependencies never enter llorch's module graph. Build it with `make tools`.
package pint
