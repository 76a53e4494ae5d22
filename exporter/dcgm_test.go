package exporter

import (
	"context"
	"fmt"
	"github.com/llorch/llorch/promtext"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/llorch/llorch/pool"
)

// The H200 load recording (fixtures/nvml-h200/smi-load.csv: nvidia-smi in
// MiB, %, W) as dcgm-exporter reports it. The SM clock is nvml-load.json's.
const (
	h200UUID  = "GPU-eaf5928d-e4e0-24a3-f50f-f2df743a2355"
	h200Model = "NVIDIA H200"
)

// dcgmText is a dcgm-exporter scrape of the loaded H200. host is the
// hostname label's name: "Hostname" (dcgm-exporter 3.x) or "hostname"
// (newer); driver adds the DCGM_FI_DRIVER_VERSION label newer versions
// attach.
func dcgmText(host string, driver bool) string {
	labels := fmt.Sprintf(`gpu="0",UUID=%q,pci_bus_id="00000000:00:06.0",device="nvidia0",modelName=%q,%s="h200-node"`, h200UUID, h200Model, host)
	if driver {
		labels += `,DCGM_FI_DRIVER_VERSION="580.159.04"`
	}
	var b strings.Builder
	for _, f := range []struct{ name, typ, help, value string }{
		{"DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "1455"},
		{"DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "3201"},
		{"DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "52"},
		{"DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "61"},
		{"DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "692.580000"},
		{"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).", "5938214773"},
		{"DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", "0"},
		{"DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "100"},
		{"DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", "23"},
		{"DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", "0"},
		{"DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", "0"},
		{"DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "0"},
		{"DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", "103998"},
		{"DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "39159"},
		{"DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", "615"},
		{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", "0.998712"},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %s\n", f.name, f.help, f.name, f.typ, f.name, labels, f.value)
	}
	return b.String()
}

var dcgmVariants = []struct {
	name   string
	host   string
	driver bool
}{
	{"dcgm-exporter 3.x (Hostname)", "Hostname", false},
	{"newer dcgm-exporter (hostname, driver version)", "hostname", true},
}

// wantDCGMGPU is the loaded H200 in base units.
func wantDCGMGPU() GPU {
	g := NewGPU(0)
	g.UUID, g.Name = h200UUID, h200Model
	g.MemoryUsedBytes = 39159 * mib
	g.MemoryFreeBytes = 103998 * mib
	g.MemoryReservedBytes = 615 * mib
	g.MemoryTotalBytes = (39159 + 103998 + 615) * mib
	g.Utilization = 1
	g.MemoryUtilization = 0.23
	g.TemperatureCelsius = 61
	g.PowerWatts = 692.58
	g.SMClockHertz = 1455e6
	g.LastXID = 0
	return g
}

// sameGPUs compares readings, NaN equal to NaN.
func sameGPUs(a, b []GPU) bool { return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b) }

func TestParseDCGM(t *testing.T) {
	for _, v := range dcgmVariants {
		t.Run(v.name, func(t *testing.T) {
			gpus, err := ParseDCGM(strings.NewReader(dcgmText(v.host, v.driver)))
			if err != nil {
				t.Fatal(err)
			}
			if want := []GPU{wantDCGMGPU()}; !sameGPUs(gpus, want) {
				t.Fatalf("got  %+v\nwant %+v", gpus, want)
			}
		})
	}
}

func TestParseDCGMSeveralGPUsSorted(t *testing.T) {
	text := `# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-b",modelName="NVIDIA H200"} 2
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",modelName="NVIDIA H200"} 1
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="1",UUID="GPU-b",modelName="NVIDIA H200"} 8
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-a",modelName="NVIDIA H200"} 9
`
	gpus, err := ParseDCGM(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 2 || gpus[0].Index != 0 || gpus[1].Index != 1 || gpus[0].UUID != "GPU-a" || gpus[1].UUID != "GPU-b" {
		t.Fatalf("gpus = %+v", gpus)
	}
	// No FB_RESERVED: the total is used + free.
	if gpus[1].MemoryTotalBytes != 10*mib || !math.IsNaN(gpus[1].MemoryReservedBytes) {
		t.Fatalf("gpu 1 total %v reserved %v", gpus[1].MemoryTotalBytes, gpus[1].MemoryReservedBytes)
	}
}

func TestParseDCGMErrors(t *testing.T) {
	for name, text := range map[string]string{
		"empty":            "",
		"no DCGM series":   "# TYPE go_goroutines gauge\ngo_goroutines 12\n# TYPE DCGM_FI_DEV_UNKNOWN gauge\nDCGM_FI_DEV_UNKNOWN{gpu=\"0\"} 1\n",
		"gpu is a UUID":    `DCGM_FI_DEV_FB_USED{gpu="GPU-eaf5928d",UUID="GPU-eaf5928d"} 1` + "\n",
		"gpu label absent": `DCGM_FI_DEV_FB_USED{UUID="GPU-eaf5928d"} 1` + "\n",
		"negative gpu":     `DCGM_FI_DEV_FB_USED{gpu="-1"} 1` + "\n",
		"not Prometheus":   "<html>502 Bad Gateway</html>\n",
	} {
		t.Run(name, func(t *testing.T) {
			if gpus, err := ParseDCGM(strings.NewReader(text)); err == nil {
				t.Fatalf("no error, gpus = %+v", gpus)
			}
		})
	}
}

// dcgmServer serves body with status until closed.
func dcgmServer(t testing.TB, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// gatherFamilies returns the registry's families by name.
func gatherFamilies(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labelSets lists each series' labels as sorted name=value strings, less
// the labels in skip.
func labelSets(mf *dto.MetricFamily, skip ...string) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			if !slices.Contains(skip, l.GetName()) {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
		}
		sort.Strings(ls)
		out = append(out, strings.Join(ls, ","))
	}
	sort.Strings(out)
	return out
}

func seriesValue(mf *dto.MetricFamily) float64 { return promtext.Value(mf.GetMetric()[0]) }

// TestDCGMScrapeMatchesNVML scrapes a dcgm-exporter through the poller and
// the GPU collector, and compares the llorch series with the NVML path's
// scrape of the same recording (testdata/h200-load.prom, the golden file
// nvml_test.go checks).
func TestDCGMScrapeMatchesNVML(t *testing.T) {
	golden, err := os.Open(filepath.Join("testdata", "h200-load.prom"))
	if err != nil {
		t.Fatal(err)
	}
	defer golden.Close()
	nvmlFams, err := promtext.Parse(golden)
	if err != nil {
		t.Fatal(err)
	}

	// What both sources read, and what only one of them can.
	common := []string{
		"llorch_gpu_info", "llorch_gpu_memory_total_bytes", "llorch_gpu_memory_used_bytes",
		"llorch_gpu_memory_reserved_bytes", "llorch_gpu_memory_free_bytes", "llorch_gpu_utilization_ratio",
		"llorch_gpu_memory_utilization_ratio", "llorch_gpu_temperature_celsius", "llorch_gpu_power_watts",
		"llorch_gpu_sm_clock_hertz", "llorch_gpu_source_up",
	}
	dcgmOnly := []string{"llorch_gpu_last_xid", "llorch_gpu_source_data_age_seconds"}
	nvmlOnly := []string{
		"llorch_gpu_power_limit_watts", "llorch_gpu_ecc_uncorrected_errors_total",
		"llorch_gpu_compute_processes", "llorch_gpu_process_memory_used_bytes",
	}
	// Values in base units: MiB * 1048576, % / 100. NVML and nvidia-smi
	// differ by rounding (NVML's bytes vs nvidia-smi's MiB) and by the
	// moment of the reading (power, temperature).
	wantValues := map[string]struct{ dcgm, nvmlTolerance float64 }{
		"llorch_gpu_memory_total_bytes":       {143772 * mib, mib + 1},
		"llorch_gpu_memory_used_bytes":        {39159 * mib, mib},
		"llorch_gpu_memory_reserved_bytes":    {615 * mib, mib},
		"llorch_gpu_memory_free_bytes":        {103998 * mib, mib},
		"llorch_gpu_utilization_ratio":        {1, 0},
		"llorch_gpu_memory_utilization_ratio": {0.23, 0},
		"llorch_gpu_temperature_celsius":      {61, 1},
		"llorch_gpu_power_watts":              {692.58, 2},
		"llorch_gpu_sm_clock_hertz":           {1455e6, 0},
		"llorch_gpu_last_xid":                 {0, -1},
		"llorch_gpu_source_up":                {1, 0},
	}

	for _, v := range dcgmVariants {
		t.Run(v.name, func(t *testing.T) {
			srv := dcgmServer(t, http.StatusOK, dcgmText(v.host, v.driver))
			src := NewDCGMSource(srv.URL+"/metrics", srv.Client())
			reg := scrapeGPUSource(t, src)
			fams := gatherFamilies(t, reg)

			var got []string
			for name := range fams {
				if strings.HasPrefix(name, "llorch_gpu_") {
					got = append(got, name)
				}
			}
			want := append(append([]string{}, common...), dcgmOnly...)
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Fatalf("llorch_gpu_* series:\n got %v\nwant %v", got, want)
			}
			for _, name := range nvmlOnly {
				if nvmlFams[name] == nil {
					t.Fatalf("golden file lacks %s: update this test", name)
				}
			}
			for _, name := range common {
				// Identity labels are the same; the source label names the
				// source, and DCGM has no compute capability.
				skip := []string{"source", "compute_capability"}
				if g, n := labelSets(fams[name], skip...), labelSets(nvmlFams[name], skip...); !slices.Equal(g, n) {
					t.Errorf("%s labels: dcgm %v, nvml %v", name, g, n)
				}
				if g, n := labelNames(fams[name]), labelNames(nvmlFams[name]); !slices.Equal(g, n) {
					t.Errorf("%s label names: dcgm %v, nvml %v", name, g, n)
				}
			}
			if got := labelSets(fams["llorch_gpu_source_up"]); !slices.Equal(got, []string{"node_id=h200-node,source=dcgm"}) {
				t.Errorf("source_up labels %v", got)
			}
			for name, w := range wantValues {
				if got := seriesValue(fams[name]); got != w.dcgm {
					t.Errorf("%s = %v, want %v", name, got, w.dcgm)
				}
				if w.nvmlTolerance < 0 {
					continue
				}
				if n := seriesValue(nvmlFams[name]); math.Abs(n-w.dcgm) > w.nvmlTolerance {
					t.Errorf("%s: dcgm %v, nvml %v (tolerance %v)", name, w.dcgm, n, w.nvmlTolerance)
				}
			}
		})
	}
}

func labelNames(mf *dto.MetricFamily) []string {
	var out []string
	for _, l := range mf.GetMetric()[0].GetLabel() {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}

// scrapeGPUSource polls src once and returns a registry of an exporter of
// its GPU collector, with node_id as the agent wraps it.
func scrapeGPUSource(t testing.TB, src GPUSource) *prometheus.Registry {
	t.Helper()
	p := NewPoller(src, time.Second, time.Minute)
	p.poll(context.Background())
	reg := prometheus.NewPedanticRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "h200-node"}, reg)
	wrapped.MustRegister(New(map[string]Collector{"gpu": NewGPUCollector(p, src.Name())}, slog.New(slog.DiscardHandler)))
	return reg
}

// TestDCGMServerErrorFailsOnlyTheGPUCollector: dcgm-exporter answering 500
// fails the GPU collector (source down) while the pools collector of the
// same exporter keeps serving.
func TestDCGMServerErrorFailsOnlyTheGPUCollector(t *testing.T) {
	srv := dcgmServer(t, http.StatusInternalServerError, "dcgm is restarting\n")
	src := NewDCGMSource(srv.URL+"/metrics", srv.Client())
	if _, err := src.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Read err = %v, want the 500", err)
	}

	p := NewPoller(src, time.Second, time.Minute)
	p.poll(context.Background())
	pools := pool.NewTable([]string{"pool-0"})
	reg := prometheus.NewPedanticRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"node_id": "n1"}, reg).MustRegister(New(map[string]Collector{
		"gpu":   NewGPUCollector(p, src.Name()),
		"pools": NewPoolsCollector(pools),
	}, slog.New(slog.DiscardHandler)))

	const want = `
# HELP llorch_gpu_source_up 1 if the GPU source answered and its data is fresh.
# TYPE llorch_gpu_source_up gauge
llorch_gpu_source_up{node_id="n1",source="dcgm"} 0
# HELP llorch_pool_ready 1 if the pool has a ready engine replica.
# TYPE llorch_pool_ready gauge
llorch_pool_ready{node_id="n1",pool_id="pool-0"} 0
# HELP llorch_scrape_collector_success 1 if the collector succeeded during this scrape.
# TYPE llorch_scrape_collector_success gauge
llorch_scrape_collector_success{collector="gpu",node_id="n1"} 0
llorch_scrape_collector_success{collector="pools",node_id="n1"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"llorch_gpu_source_up", "llorch_pool_ready", "llorch_scrape_collector_success"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "llorch_gpu_memory_used_bytes", "llorch_gpu_source_data_age_seconds"); err != nil || n != 0 {
		t.Fatalf("%d GPU readings exported from a failed source (%v)", n, err)
	}
}

func TestDCGMUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if _, err := NewDCGMSource(url, nil).Read(context.Background()); err == nil {
		t.Fatal("no error from a closed port")
	}
}

// dcgmFamily cuts one family (HELP, TYPE, sample) out of a dcgm-exporter
// text.
func dcgmFamily(text, name string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, "# HELP "+name+" ") || strings.HasPrefix(line, "# TYPE "+name+" ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// FuzzParseDCGM is seeded with cuts of the recording's texts, one family
// each: the fuzzer minimises every new input in time quadratic in its
// length, and from the whole 3 kB scrapes it makes no progress in seconds.
// TestParseDCGM covers the whole texts.
func FuzzParseDCGM(f *testing.F) {
	for _, v := range dcgmVariants {
		text := dcgmText(v.host, v.driver)
		for _, name := range []string{"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"} {
			f.Add(dcgmFamily(text, name))
		}
	}
	f.Add(`DCGM_FI_DEV_FB_USED{gpu="1"} 5` + "\n" + `DCGM_FI_DEV_FB_FREE{gpu="1"} NaN` + "\n")
	f.Add(`DCGM_FI_DEV_GPU_UTIL{gpu="-1"} 5` + "\n")
	f.Add("# TYPE DCGM_FI_DEV_FB_USED histogram\nDCGM_FI_DEV_FB_USED_bucket{gpu=\"0\",le=\"+Inf\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		gpus, err := ParseDCGM(strings.NewReader(text))
		if err != nil {
			return
		}
		if len(gpus) == 0 {
			t.Fatal("no error and no GPUs")
		}
		for i, g := range gpus {
			if g.Index < 0 {
				t.Fatalf("gpu %d has index %d", i, g.Index)
			}
			if i > 0 && gpus[i-1].Index >= g.Index {
				t.Fatalf("indices not sorted and unique: %d then %d", gpus[i-1].Index, g.Index)
			}
		}
	})
}

func TestDCGMFamilyCut(t *testing.T) {
	text := dcgmFamily(dcgmText("hostname", true), "DCGM_FI_DEV_FB_USED")
	if n := strings.Count(text, "\n"); n != 3 {
		t.Fatalf("%d lines:\n%s", n, text)
	}
	gpus, err := ParseDCGM(strings.NewReader(text))
	if err != nil || len(gpus) != 1 || gpus[0].MemoryUsedBytes != 39159*mib || gpus[0].UUID != h200UUID {
		t.Fatalf("%+v, %v", gpus, err)
	}
}
