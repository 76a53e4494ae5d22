// Package config holds what llorch's commands share to turn flags and
// environment variables into running settings: duration values that accept
// the bare numbers of the legacy variables (…_MS, …_SECS), logger setup,
// binding and serving HTTP (Listen, NewServer, Serve) and the loopback
// pprof listener. Its subpackage configtest checks the flags against the
// documentation.
package config
