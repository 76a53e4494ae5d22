package main

import "syscall"

// totalRAM reports the machine's memory for registration; 0 if unknown.
func totalRAM() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
