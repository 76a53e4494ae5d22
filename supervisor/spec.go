package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/llorch/llorch/api"
)

// EngineSim names the built-in simulator (`llorch sim-engine`) as an engine.
const EngineSim = "sim"

// Defaults of a pool's engine.
const (
	DefaultSlots         = 4
	DefaultCtxSize       = 4096
	DefaultHealthTimeout = 120 * time.Second
)

// Spec is one pool's engine, from flags or a --pools-config file.
type Spec struct {
	PoolID string `json:"id"`
	// Engine is "sim" or the path of a llama-server binary.
	Engine     string   `json:"engine"`
	Model      string   `json:"model"`
	Slots      int      `json:"slots"`
	CtxSize    int      `json:"ctx_size"`
	DeviceMask string   `json:"device_mask"`
	Args       []string `json:"args"`
	// HealthTimeout is how long the engine may take to answer /health 200
	// (model loading), e.g. "120s".
	HealthTimeout string `json:"health_timeout"`

	healthTimeout time.Duration
}

// File is the --pools-config document.
type File struct {
	Pools []Spec `json:"pools"`
}

// LoadFile reads and validates a --pools-config YAML file. Unknown keys are
// errors: a typo must not silently drop a setting.
func LoadFile(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pools config: %w", err)
	}
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("pools config %s: %w", path, err)
	}
	if len(f.Pools) == 0 {
		return nil, fmt.Errorf("pools config %s: no pools", path)
	}
	seen := map[string]bool{}
	for i := range f.Pools {
		if err := f.Pools[i].Normalize(); err != nil {
			return nil, fmt.Errorf("pools config %s: pools[%d]: %w", path, i, err)
		}
		if seen[f.Pools[i].PoolID] {
			return nil, fmt.Errorf("pools config %s: pool %q declared twice", path, f.Pools[i].PoolID)
		}
		seen[f.Pools[i].PoolID] = true
	}
	return f.Pools, nil
}

// Normalize fills defaults and validates the spec.
func (s *Spec) Normalize() error {
	if !api.ValidID(s.PoolID) {
		return fmt.Errorf("id %q: only letters, digits and -_.: are allowed", s.PoolID)
	}
	if s.Engine == "" {
		return errors.New("engine is required: \"sim\" or the path of llama-server")
	}
	if s.Model == "" {
		if s.Engine != EngineSim {
			return errors.New("model is required for llama-server")
		}
		s.Model = "model.gguf"
	}
	if s.Slots == 0 {
		s.Slots = DefaultSlots
	}
	if s.CtxSize == 0 {
		s.CtxSize = DefaultCtxSize
	}
	if s.Slots < 1 || s.CtxSize < s.Slots {
		return fmt.Errorf("slots %d, ctx_size %d: want slots >= 1 and ctx_size >= slots", s.Slots, s.CtxSize)
	}
	s.healthTimeout = DefaultHealthTimeout
	if s.HealthTimeout != "" {
		d, err := time.ParseDuration(s.HealthTimeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("health_timeout %q: want a positive duration such as 120s", s.HealthTimeout)
		}
		s.healthTimeout = d
	}
	return nil
}

// SetHealthTimeout overrides the health timeout of a normalized spec.
func (s *Spec) SetHealthTimeout(d time.Duration) { s.healthTimeout = d; s.HealthTimeout = d.String() }

// command returns the binary and arguments that start the engine on port,
// llama-server's flags in both cases. --slots is for llama-server builds
// that served /slots only when asked (newer ones, and the simulator, serve
// it by default); an operator's --no-slots in Args comes after it and wins.
func (s *Spec) command(simBinary string, port int) (string, []string) {
	args := []string{"-m", s.Model, "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"-np", strconv.Itoa(s.Slots), "-c", strconv.Itoa(s.CtxSize), "--metrics", "--slots"}
	args = append(args, s.Args...)
	if s.Engine == EngineSim {
		return simBinary, append([]string{"sim-engine"}, args...)
	}
	return s.Engine, args
}

// ModelName is what the engine reports as its model: the file's base name.
func (s *Spec) ModelName() string { return filepath.Base(s.Model) }
