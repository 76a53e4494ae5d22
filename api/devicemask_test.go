package api

import (
	"slices"
	"testing"
)

func TestDeviceIndices(t *testing.T) {
	for mask, want := range map[string][]int{
		"GPU0":   {0},
		"0,1":    {0, 1},
		"cuda:1": {1},
		"CUDA0":  {0},
		"2, 3":   {2, 3},
		"":       nil,
		"all":    nil,
	} {
		if got := DeviceIndices(mask); !slices.Equal(got, want) || len(got) != len(want) {
			t.Errorf("DeviceIndices(%q) = %v, want %v", mask, got, want)
		}
	}
}
