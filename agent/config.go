package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/exporter"
	"github.com/llorch/llorch/handoff"
	"github.com/llorch/llorch/supervisor"
	"github.com/llorch/llorch/version"
)

// Config is pool-managerd's configuration: what its flags say, parsed. New
// fills the defaults of zero fields and validates the rest; its errors name
// the flag and variable of the field at fault (docs/configuration.md),
// since that is where users set it.
type Config struct {
	// Addr is the listen address (--addr). Listener, when set, is used
	// instead: tests pass 127.0.0.1:0.
	Addr     string
	Listener net.Listener
	// Token is required on every route but /health and /metrics, and sent
	// to the control plane (--api-token).
	Token   string
	Version string
	// RuntimeDir holds the handoff files (--runtime-dir).
	RuntimeDir     string
	WatchMode      handoff.Mode
	WatchInterval  time.Duration // --watch-interval: polling mode's period
	RescanInterval time.Duration // --rescan-interval: fsnotify mode's full rescan
	// Pools are the declared pool ids (--pools); with Engines, the engines'
	// pools replace them.
	Pools []string
	// Engines are the engines to launch (--pools-config, --engine...);
	// SimBinary the llorch binary for engine "sim" (--sim-binary; found
	// beside this program or on PATH when empty).
	Engines   []supervisor.Spec
	SimBinary string
	Breaker   supervisor.Breaker

	// Cloud registers with and heartbeats to the control plane at
	// ControlPlaneURL (--cloud-profile, --orchestratord-url).
	Cloud             bool
	ControlPlaneURL   string
	Registration      api.RegisterRequest
	HeartbeatInterval time.Duration

	// ShutdownTimeout bounds each control-plane step of shutdown: the final
	// heartbeat, the deregistration (--shutdown-timeout).
	ShutdownTimeout time.Duration
	// DrainTimeout bounds the wait for in-flight requests at shutdown, and
	// is the deadline of a pool drain that names none (--drain-timeout).
	DrainTimeout time.Duration

	GPU                GPUConfig
	EnginePollInterval time.Duration // --engine-poll-interval
	EngineHost         string        // --engine-host: where launched engines listen and are announced
	Logger             *slog.Logger
}

// GPUConfig chooses the GPU source.
type GPUConfig struct {
	// Source is auto (NVML, then DCGM if DCGMURL is set, else none), nvml,
	// dcgm, sim or none (--gpu-source).
	Source string
	// SimGPUs are the GPUs of source sim (--sim-gpus).
	SimGPUs []exporter.SimGPUSpec
	// DCGMURL is a dcgm-exporter's /metrics (--dcgm-exporter-url).
	DCGMURL      string
	PollInterval time.Duration
	// MaxAge: older readings count as missing. 0 means 3 poll intervals,
	// and at least 90s for dcgm, which samples every 30s.
	MaxAge time.Duration
}

// GPU sources.
const (
	GPUAuto = "auto"
	GPUNVML = "nvml"
	GPUDCGM = "dcgm"
	GPUSim  = "sim"
	GPUNone = "none"
)

// withDefaults returns cfg with its zero fields set to pool-managerd's
// defaults.
func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.WatchInterval, time.Second)
	def(&cfg.RescanInterval, handoff.DefaultRescanInterval)
	def(&cfg.HeartbeatInterval, 10*time.Second)
	def(&cfg.ShutdownTimeout, 30*time.Second)
	def(&cfg.DrainTimeout, 30*time.Second)
	def(&cfg.GPU.PollInterval, 2*time.Second)
	def(&cfg.EnginePollInterval, 2*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = version.Version
	}
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = ".runtime/engines"
	}
	if cfg.WatchMode == "" {
		cfg.WatchMode = handoff.ModeAuto
	}
	if cfg.GPU.Source == "" {
		cfg.GPU.Source = GPUAuto
	}
	if cfg.Breaker == (supervisor.Breaker{}) {
		cfg.Breaker = supervisor.Breaker{MaxCrashes: 5, Window: 5 * time.Minute, Cooldown: 5 * time.Minute}
	}
	r := &cfg.Registration
	if r.MachineID == "" {
		r.MachineID = r.NodeID
	}
	if r.Version == "" {
		r.Version = cfg.Version
	}
	if r.Capabilities.GPUs == nil {
		r.Capabilities.GPUs = []api.GPUInfo{}
	}
	if len(cfg.Engines) > 0 {
		cfg.Pools = cfg.Pools[:0:0]
		for _, e := range cfg.Engines {
			cfg.Pools = append(cfg.Pools, e.PoolID)
		}
	}
	return cfg
}

// validate checks what defaults cannot fix.
func (cfg Config) validate() error {
	if !api.ValidID(cfg.Registration.NodeID) {
		return fmt.Errorf("--node-id/POOL_MANAGERD_NODE_ID %q: only letters, digits and -_.: are allowed", cfg.Registration.NodeID)
	}
	for _, p := range cfg.Pools {
		if !api.ValidID(p) {
			return fmt.Errorf("--pools/POOL_MANAGERD_POOLS: pool id %q: only letters, digits and -_.: are allowed", p)
		}
	}
	if cfg.Breaker.MaxCrashes < 1 {
		return fmt.Errorf("--engine-max-crashes/POOL_MANAGERD_ENGINE_MAX_CRASHES %d: want at least 1", cfg.Breaker.MaxCrashes)
	}
	if err := cfg.GPU.validate(); err != nil {
		return err
	}
	if cfg.Listener == nil {
		if err := api.CheckExposure(cfg.Addr, cfg.Token); err != nil {
			return err
		}
	}
	if !cfg.Cloud {
		return nil
	}
	if err := requireURL(cfg.Registration.Address, "--address/POOL_MANAGERD_ADDRESS"); err != nil {
		return err
	}
	if cfg.ControlPlaneURL == "" {
		return requireURL("", "--orchestratord-url/ORCHESTRATORD_URL")
	}
	for _, u := range strings.Split(cfg.ControlPlaneURL, ",") { // several control planes sharing one fleet
		if err := checkURL(strings.TrimSpace(u), "--orchestratord-url/ORCHESTRATORD_URL"); err != nil {
			return err
		}
	}
	return nil
}

func (g GPUConfig) validate() error {
	switch g.Source {
	case GPUAuto, GPUNVML, GPUNone:
	case GPUDCGM:
		if g.DCGMURL == "" {
			return errors.New("--gpu-source dcgm needs --dcgm-exporter-url/POOL_MANAGERD_DCGM_EXPORTER_URL")
		}
	case GPUSim:
		if len(g.SimGPUs) == 0 {
			return errors.New("--gpu-source sim needs --sim-gpus/POOL_MANAGERD_SIM_GPUS, e.g. 2xH200:141GiB")
		}
	default:
		return fmt.Errorf("--gpu-source/POOL_MANAGERD_GPU_SOURCE %q: want auto, nvml, dcgm, sim or none", g.Source)
	}
	if g.DCGMURL != "" {
		return checkURL(g.DCGMURL, "--dcgm-exporter-url/POOL_MANAGERD_DCGM_EXPORTER_URL")
	}
	return nil
}

func requireURL(raw, name string) error {
	if raw == "" {
		return fmt.Errorf("%s is required with --cloud-profile", name)
	}
	return checkURL(raw, name)
}

func checkURL(raw, name string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want an http(s)://host:port URL", name, raw)
	}
	return nil
}
