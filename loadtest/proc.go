package loadtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ProcUsage reads a process's CPU time (/proc/PID/stat: utime + stime)
// and resident memory (/proc/PID/statm: resident pages). Linux only;
// false elsewhere or once the process is gone.
func ProcUsage(pid int) (Usage, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, false
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return Usage{}, false
	}
	statm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return Usage{}, false
	}
	f := strings.Fields(string(statm))
	if len(f) < 2 {
		return Usage{}, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return Usage{}, false
	}
	return Usage{PID: pid, CPUSeconds: cpu, RSSBytes: pages * uint64(os.Getpagesize())}, true
}

// parseStatCPU returns utime + stime of a /proc/PID/stat line, in seconds.
// The command name (field 2) may hold spaces and parentheses: fields are
// counted after its last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return float64(u+s) / float64(clockTicks()), nil
}

var clockTicks = sync.OnceValue(func() uint64 {
	// AT_CLKTCK (17) in the auxiliary vector is sysconf(_SC_CLK_TCK),
	// which Go cannot call without cgo; 100 is Linux's value everywhere
	// that matters.
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for i := 0; i+16 <= len(b); i += 16 {
		key, val := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])
		if key == 17 && val > 0 {
			return val
		}
	}
	return 100
})
