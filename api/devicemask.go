package api

import (
	"regexp"
	"strconv"
)

var maskDigits = regexp.MustCompile(`\d+`)

// DeviceIndices reads the GPU indices of a device mask, as handoff files,
// heartbeats (PoolState.DeviceMask) and task placements spell it: "0,1",
// "GPU0", "cuda:1". Empty (or a mask naming no index, such as "all") means
// every GPU of the node, and yields nil.
//
// It lives here, beside the types that carry masks, so that the control
// plane reads masks without importing the node agent's exporter (and
// with it NVML).
func DeviceIndices(mask string) []int {
	if mask == "" {
		return nil
	}
	var out []int
	for _, f := range maskDigits.FindAllString(mask, -1) {
		if i, err := strconv.Atoi(f); err == nil {
			out = append(out, i)
		}
	}
	return out
}
