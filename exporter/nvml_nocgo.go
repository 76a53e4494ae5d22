//go:build !cgo

package exporter

import "errors"

// errNVMLUnavailable explains why a build without cgo cannot read NVML.
var errNVMLUnavailable = errors.New("nvml: this build has no cgo, which go-nvml needs; use --gpu-source dcgm or rebuild with CGO_ENABLED=1")

// NVMLSource is unavailable without cgo.
type NVMLSource struct{}

// OpenNVML always fails without cgo.
func OpenNVML() (*NVMLSource, error) { return nil, errNVMLUnavailable }

// Close does nothing.
func (*NVMLSource) Close() error { return nil }
