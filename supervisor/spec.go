package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

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
	PoolID string `json:"id" yaml:"id"`
	// Engine is "sim" or the path of a llama-server binary.
	Engine     string   `json:"engine" yaml:"engine"`
	Model      string   `json:"model" yaml:"model"`
	Slots      int      `json:"slots" yaml:"slots"`
	CtxSize    int      `json:"ctx_size" yaml:"ctx_size"`
	DeviceMask string   `json:"device_mask" yaml:"device_mask"`
	Args       []string `json:"args" yaml:"args"`
	// HealthTimeout is how long the engine may take to answer /health 200
	// (model loading), e.g. "120s".
	HealthTimeout string `json:"health_timeout" yaml:"health_timeout"`

	healthTimeout time.Duration
}

// File is the --pools-config document.
type File struct {
	Pools []Spec `json:"pools" yaml:"pools"`
}

// LoadFile reads and validates a --pools-config YAML file. Unknown keys are
// errors: a typo must not silently drop a setting. Errors say which line of
// the file is at fault.
func LoadFile(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pools config: %w", err)
	}
	specs, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("pools config %s: %w", path, err)
	}
	return specs, nil
}

// ParseFile parses and validates a --pools-config document.
func ParseFile(data []byte) ([]Spec, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	if len(f.Pools) == 0 {
		return nil, errors.New("no pools")
	}
	lines := poolLines(&doc)
	at := func(i int) string {
		if i < len(lines) {
			return fmt.Sprintf("line %d: ", lines[i])
		}
		return ""
	}
	seen := map[string]bool{}
	for i := range f.Pools {
		if err := f.Pools[i].Normalize(); err != nil {
			return nil, fmt.Errorf("%spools[%d]: %w", at(i), i, err)
		}
		if seen[f.Pools[i].PoolID] {
			return nil, fmt.Errorf("%spool %q declared twice", at(i), f.Pools[i].PoolID)
		}
		seen[f.Pools[i].PoolID] = true
	}
	return f.Pools, nil
}

var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlError makes the YAML decoder's error one line that says YAML and
// the line: "YAML: line 4: unknown key \"slot\"".
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	return errors.New("YAML: " + unknownFieldRE.ReplaceAllString(msg, `unknown key "$1"`))
}

// poolLines returns the line of each item of the document's pools list.
func poolLines(doc *yaml.Node) []int {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value != "pools" || m[i+1].Kind != yaml.SequenceNode {
			continue
		}
		lines := make([]int, len(m[i+1].Content))
		for j, item := range m[i+1].Content {
			lines[j] = item.Line
		}
		return lines
	}
	return nil
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

// command returns the binary and arguments that start the engine on host:port,
// llama-server's flags in both cases. --slots is for llama-server builds
// that served /slots only when asked (newer ones, and the simulator, serve
// it by default); an operator's --no-slots in Args comes after it and wins.
func (s *Spec) command(simBinary, host string, port int) (string, []string) {
	args := []string{"-m", s.Model, "--host", host, "--port", strconv.Itoa(port),
		"-np", strconv.Itoa(s.Slots), "-c", strconv.Itoa(s.CtxSize), "--metrics", "--slots"}
	args = append(args, s.Args...)
	if s.Engine == EngineSim {
		return simBinary, append([]string{"sim-engine"}, args...)
	}
	return s.Engine, args
}

// ModelName is what the engine reports as its model: the file's base name.
func (s *Spec) ModelName() string { return filepath.Base(s.Model) }
