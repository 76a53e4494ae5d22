// Package config holds what llorch's commands share to turn flags and
// environment variables into running settings: duration values that accept
// the bare numbers of the legacy variables (…_MS, …_SECS), and logger setup.
package config
