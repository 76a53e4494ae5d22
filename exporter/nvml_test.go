//go:build cgo

package exporter

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/*.prom golden scrapes")

const fixtureDir = "../../shared/fixtures/nvml-h200"

// nvmlFixture is the part of a recorded NVML probe the collector reads.
type nvmlFixture struct {
	Devices []struct {
		Index             int    `json:"index"`
		UUID              string `json:"uuid"`
		Name              string `json:"name"`
		ComputeCapability string `json:"compute_capability"`
		Memory            struct{ Total, Free, Used uint64 }
		MemoryV2          struct{ Total, Reserved, Free, Used uint64 } `json:"memory_v2"`
		Utilization       struct{ Gpu, Memory uint32 }
		TemperatureC      uint32 `json:"temperature_c"`
		PowerMW           uint32 `json:"power_mw"`
		PowerLimitMW      uint32 `json:"power_limit_mw"`
		ClockSMMHz        uint32 `json:"clock_sm_mhz"`
		ECCUncorrected    uint64 `json:"ecc_uncorrected_volatile"`
		ComputeProcesses  int    `json:"compute_processes"`
		ProcessList       []struct {
			PID   uint32 `json:"pid"`
			Bytes uint64 `json:"used_gpu_memory_bytes"`
		} `json:"compute_process_list"`
	} `json:"devices"`
}

func loadNVMLFixture(t testing.TB, name string) nvmlFixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var f nvmlFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// fakeNVML is a go-nvml mock answering what the fixture recorded. Methods
// the collector must not call (fan speed: "Not Supported" on an H200) are
// left nil, so calling them panics.
func fakeNVML(f nvmlFixture, procs map[int][]nvml.ProcessInfo) *mock.Interface {
	devs := make([]*mock.Device, len(f.Devices))
	for i, d := range f.Devices {
		devs[i] = &mock.Device{
			GetUUIDFunc: func() (string, nvml.Return) { return d.UUID, nvml.SUCCESS },
			GetNameFunc: func() (string, nvml.Return) { return d.Name, nvml.SUCCESS },
			GetCudaComputeCapabilityFunc: func() (int, int, nvml.Return) {
				major, minor, _ := strings.Cut(d.ComputeCapability, ".")
				a, _ := strconv.Atoi(major)
				b, _ := strconv.Atoi(minor)
				return a, b, nvml.SUCCESS
			},
			GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
				m := d.MemoryV2
				return nvml.Memory_v2{Total: m.Total, Reserved: m.Reserved, Free: m.Free, Used: m.Used}, nvml.SUCCESS
			},
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: d.Memory.Total, Free: d.Memory.Free, Used: d.Memory.Used}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
				return nvml.Utilization{Gpu: d.Utilization.Gpu, Memory: d.Utilization.Memory}, nvml.SUCCESS
			},
			GetTemperatureFunc:        func(nvml.TemperatureSensors) (uint32, nvml.Return) { return d.TemperatureC, nvml.SUCCESS },
			GetPowerUsageFunc:         func() (uint32, nvml.Return) { return d.PowerMW, nvml.SUCCESS },
			GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return d.PowerLimitMW, nvml.SUCCESS },
			GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
				if c != nvml.CLOCK_SM {
					return 0, nvml.ERROR_NOT_SUPPORTED
				}
				return d.ClockSMMHz, nvml.SUCCESS
			},
			GetTotalEccErrorsFunc: func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
				return d.ECCUncorrected, nvml.SUCCESS
			},
			GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
				if p, ok := procs[i]; ok {
					return p, nvml.SUCCESS
				}
				out := make([]nvml.ProcessInfo, 0, len(d.ProcessList))
				for _, p := range d.ProcessList {
					out = append(out, nvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.Bytes})
				}
				return out, nvml.SUCCESS
			},
		}
	}
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		ErrorStringFunc:    func(r nvml.Return) string { return "nvml error " + strconv.Itoa(int(r)) },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

// scrape polls src once and returns the exporter's registry.
func scrapeSource(t testing.TB, src GPUSource) *prometheus.Registry {
	t.Helper()
	p := NewPoller(src, time.Second, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	p.poll(ctx)
	cancel()
	reg := prometheus.NewPedanticRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "h200-node"}, reg)
	wrapped.MustRegister(New(map[string]Collector{"gpu": NewGPUCollector(p, src.Name())}, slog.New(slog.DiscardHandler)))
	return reg
}

// gpuSeries are the series the golden files hold: every llorch_gpu_*
// except the data age, which depends on the clock.
var gpuSeries = []string{
	"llorch_gpu_source_up", "llorch_gpu_info", "llorch_gpu_memory_total_bytes", "llorch_gpu_memory_used_bytes",
	"llorch_gpu_memory_reserved_bytes", "llorch_gpu_memory_free_bytes", "llorch_gpu_utilization_ratio",
	"llorch_gpu_memory_utilization_ratio", "llorch_gpu_temperature_celsius", "llorch_gpu_power_watts",
	"llorch_gpu_power_limit_watts", "llorch_gpu_sm_clock_hertz", "llorch_gpu_ecc_uncorrected_errors_total",
	"llorch_gpu_compute_processes", "llorch_gpu_process_memory_used_bytes", "llorch_gpu_last_xid",
}

// checkGolden compares the registry's GPU series with testdata/name.
func checkGolden(t *testing.T, reg *prometheus.Registry, name string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, n := range gpuSeries {
				if mf.GetName() == n {
					if _, err := expfmtWrite(&b, mf); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, gpuSeries...); err != nil {
		t.Fatal(err)
	}
}

func TestNVMLFromH200Recordings(t *testing.T) {
	tests := []struct {
		fixture, golden string
		procs           map[int][]nvml.ProcessInfo
		// what nvidia-smi said at the same moment, in MiB
		smiTotal, smiUsed, smiFree float64
	}{
		{fixture: "nvml-idle.json", golden: "h200-idle.prom", smiTotal: 143771, smiUsed: 0, smiFree: 143156},
		// The load recording has the process count but not NVML's per-process
		// bytes; nvidia-smi listed pid 430 with 39150 MiB.
		{fixture: "nvml-load.json", golden: "h200-load.prom", smiTotal: 143771, smiUsed: 39159, smiFree: 103998,
			procs: map[int][]nvml.ProcessInfo{0: {{Pid: 430, UsedGpuMemory: 39150 << 20}}}},
		{fixture: "nvml-two-procs.json", golden: "h200-two-procs.prom", smiTotal: 143771, smiUsed: 34823, smiFree: 108334},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			src, err := NewNVMLSource(fakeNVML(loadNVMLFixture(t, tt.fixture), tt.procs))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, scrapeSource(t, src), tt.golden)

			// Cross-check with nvidia-smi, which shows v2 "used" (reserved
			// memory excluded) in MiB.
			gpus, err := src.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			g := gpus[0]
			for _, c := range []struct {
				what      string
				bytes, mb float64
			}{{"total", g.MemoryTotalBytes, tt.smiTotal}, {"used", g.MemoryUsedBytes, tt.smiUsed}, {"free", g.MemoryFreeBytes, tt.smiFree}} {
				if got := math.Round(c.bytes / (1 << 20)); math.Abs(got-c.mb) > 1 {
					t.Errorf("%s: %v MiB, nvidia-smi said %v MiB", c.what, got, c.mb)
				}
			}
		})
	}
}

func TestNVMLIdleExactValues(t *testing.T) {
	src, err := NewNVMLSource(fakeNVML(loadNVMLFixture(t, "nvml-idle.json"), nil))
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g := gpus[0]
	// v1 would say 644,939,776 used; v2 says 0 used and that much reserved.
	want := map[string][2]float64{
		"total":    {g.MemoryTotalBytes, 150754820096},
		"used":     {g.MemoryUsedBytes, 0},
		"reserved": {g.MemoryReservedBytes, 644939776},
		"free":     {g.MemoryFreeBytes, 150109880320},
		"power":    {g.PowerWatts, 126.379},
		"limit":    {g.PowerLimitWatts, 700},
		"temp":     {g.TemperatureCelsius, 40},
		"sm clock": {g.SMClockHertz, 1980e6},
		"util":     {g.Utilization, 0},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}
	if g.Name != "NVIDIA H200" || g.UUID != "GPU-eaf5928d-e4e0-24a3-f50f-f2df743a2355" || g.ComputeCapability != "9.0" {
		t.Errorf("identity = %q %q %q", g.Name, g.UUID, g.ComputeCapability)
	}
}

func TestNVMLUnsupportedReadingsAreSkipped(t *testing.T) {
	lib := fakeNVML(loadNVMLFixture(t, "nvml-idle.json"), nil)
	dev, _ := lib.DeviceGetHandleByIndex(0)
	d := dev.(*mock.Device)
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	// An old driver without v2 memory info: fall back to v1.
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_FUNCTION_NOT_FOUND }
	src, err := NewNVMLSource(lib)
	if err != nil {
		t.Fatal(err)
	}
	reg := scrapeSource(t, src)
	for name, want := range map[string]int{
		"llorch_gpu_power_watts":                  0,
		"llorch_gpu_ecc_uncorrected_errors_total": 0,
		"llorch_gpu_memory_reserved_bytes":        0,
		"llorch_gpu_temperature_celsius":          1,
		"llorch_gpu_memory_used_bytes":            1,
	} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != want {
			t.Errorf("%s: %d series (%v), want %d", name, n, err, want)
		}
	}
	gpus, _ := src.Read(context.Background())
	if gpus[0].MemoryUsedBytes != 644939776 {
		t.Errorf("v1 fallback used = %v, want v1's 644939776", gpus[0].MemoryUsedBytes)
	}
}

func TestNVMLInitFailureCallsNothingElse(t *testing.T) {
	// Every other method is nil: calling one after the failed Init panics,
	// as the real library kills the process.
	lib := &mock.Interface{
		InitFunc:        func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
		ErrorStringFunc: func(nvml.Return) string { return "NVML Shared Library Not Found" },
	}
	if _, err := NewNVMLSource(lib); err == nil || !strings.Contains(err.Error(), "Not Found") {
		t.Fatalf("err = %v", err)
	}
}

func TestNVMLDeviceCountFailure(t *testing.T) {
	lib := fakeNVML(loadNVMLFixture(t, "nvml-idle.json"), nil)
	lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	src, err := NewNVMLSource(lib)
	if err != nil {
		t.Fatal(err)
	}
	reg := scrapeSource(t, src)
	const want = `
# HELP llorch_gpu_source_up 1 if the GPU source answered and its data is fresh.
# TYPE llorch_gpu_source_up gauge
llorch_gpu_source_up{node_id="h200-node",source="nvml"} 0
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="gpu",node_id="h200-node"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "llorch_gpu_source_up", "llorch_scrape_collector_success"); err != nil {
		t.Fatal(err)
	}
}
