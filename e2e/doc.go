// Package e2e holds end-to-end tests: they build the real binaries, start
// them as processes on 127.0.0.1 and drive them over HTTP and signals. Run
// with `make test-e2e` (build tag e2e).
package e2e
