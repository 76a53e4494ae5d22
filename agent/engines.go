package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/llorch/llorch/supervisor"
)

// findEngines checks that every engine binary exists and returns the llorch
// binary that runs engine "sim": flag (--sim-binary) if set, else the llorch
// next to this program, else the one on PATH; "" when no engine is "sim".
func findEngines(specs []supervisor.Spec, flag string) (string, error) {
	needSim := false
	for _, s := range specs {
		if s.Engine == supervisor.EngineSim {
			needSim = true
			continue
		}
		if _, err := exec.LookPath(s.Engine); err != nil {
			return "", fmt.Errorf("pool %s: engine %q: %w", s.PoolID, s.Engine, err)
		}
	}
	if !needSim {
		return "", nil
	}
	if flag != "" {
		if _, err := exec.LookPath(flag); err != nil {
			return "", fmt.Errorf("--sim-binary/POOL_MANAGERD_SIM_BINARY %q: %w", flag, err)
		}
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "llorch")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("llorch")
	if err != nil {
		return "", errors.New(`engine "sim" needs the llorch binary: none next to pool-managerd or on PATH (set --sim-binary/POOL_MANAGERD_SIM_BINARY)`)
	}
	return path, nil
}
