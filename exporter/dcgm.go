package exporter

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/llorch/llorch/promtext"
	dto "github.com/prometheus/client_model/go"
)

// DCGMSource reads GPUs from a running dcgm-exporter's /metrics (go-dcgm,
// the library, cannot be fetched here). dcgm-exporter speaks DCGM's units
// (MiB, %); they are converted to llorch's base units. Its own samples are
// taken every 30 s by default; the Poller's max age bounds how old the data
// may get before it counts as missing.
type DCGMSource struct {
	url    string
	client *http.Client
}

var _ GPUSource = (*DCGMSource)(nil)

// NewDCGMSource reads dcgm-exporter at url (e.g. http://127.0.0.1:9400/metrics).
func NewDCGMSource(url string, client *http.Client) *DCGMSource {
	if client == nil {
		client = http.DefaultClient
	}
	return &DCGMSource{url: url, client: client}
}

// Name implements GPUSource.
func (s *DCGMSource) Name() string { return "dcgm" }

// Read implements GPUSource.
func (s *DCGMSource) Read(ctx context.Context) ([]GPU, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("dcgm-exporter: %w", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dcgm-exporter: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("dcgm-exporter %s: %s", s.url, resp.Status)
	}
	return ParseDCGM(io.LimitReader(resp.Body, 16<<20))
}

const mib = 1 << 20

// dcgmFields maps dcgm-exporter's fields onto GPU readings, with the
// factor to base units.
var dcgmFields = map[string]struct {
	set    func(g *GPU, v float64)
	factor float64
}{
	"DCGM_FI_DEV_FB_USED":       {func(g *GPU, v float64) { g.MemoryUsedBytes = v }, mib},
	"DCGM_FI_DEV_FB_FREE":       {func(g *GPU, v float64) { g.MemoryFreeBytes = v }, mib},
	"DCGM_FI_DEV_FB_RESERVED":   {func(g *GPU, v float64) { g.MemoryReservedBytes = v }, mib},
	"DCGM_FI_DEV_FB_TOTAL":      {func(g *GPU, v float64) { g.MemoryTotalBytes = v }, mib},
	"DCGM_FI_DEV_GPU_UTIL":      {func(g *GPU, v float64) { g.Utilization = v }, 0.01},
	"DCGM_FI_DEV_MEM_COPY_UTIL": {func(g *GPU, v float64) { g.MemoryUtilization = v }, 0.01},
	"DCGM_FI_DEV_GPU_TEMP":      {func(g *GPU, v float64) { g.TemperatureCelsius = v }, 1},
	"DCGM_FI_DEV_POWER_USAGE":   {func(g *GPU, v float64) { g.PowerWatts = v }, 1},
	"DCGM_FI_DEV_SM_CLOCK":      {func(g *GPU, v float64) { g.SMClockHertz = v }, 1e6},
	"DCGM_FI_DEV_XID_ERRORS":    {func(g *GPU, v float64) { g.LastXID = v }, 1},
}

// ParseDCGM maps a dcgm-exporter scrape onto GPU readings, one per "gpu"
// label. Both label spellings of dcgm-exporter versions are accepted
// (Hostname/hostname, modelName, UUID); series of other hosts' GPUs do not
// occur in one exporter's output and are not filtered.
func ParseDCGM(r io.Reader) ([]GPU, error) {
	fams, err := promtext.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse dcgm-exporter metrics: %w", err)
	}
	byIndex := map[int]*GPU{}
	for name, f := range fams {
		field, ok := dcgmFields[name]
		if !ok {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := labelMap(m)
			idx, err := strconv.Atoi(labels["gpu"])
			if err != nil || idx < 0 {
				return nil, fmt.Errorf("dcgm-exporter %s: gpu label %q is not an index", name, labels["gpu"])
			}
			g, ok := byIndex[idx]
			if !ok {
				n := NewGPU(idx)
				g = &n
				byIndex[idx] = g
			}
			if g.UUID == "" {
				g.UUID = labels["UUID"]
			}
			if g.Name == "" {
				g.Name = labels["modelName"]
			}
			field.set(g, promtext.Value(m)*field.factor)
		}
	}
	if len(byIndex) == 0 {
		return nil, fmt.Errorf("dcgm-exporter output has no DCGM_FI_DEV_* GPU series")
	}
	out := make([]GPU, 0, len(byIndex))
	for _, g := range byIndex {
		// dcgm-exporter's default counters have no total: derive it.
		if isNaN(g.MemoryTotalBytes) && !isNaN(g.MemoryUsedBytes) && !isNaN(g.MemoryFreeBytes) {
			g.MemoryTotalBytes = g.MemoryUsedBytes + g.MemoryFreeBytes
			if !isNaN(g.MemoryReservedBytes) {
				g.MemoryTotalBytes += g.MemoryReservedBytes
			}
		}
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func isNaN(v float64) bool { return v != v }

func labelMap(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		name := l.GetName()
		// Older dcgm-exporters say Hostname, newer hostname.
		if strings.EqualFold(name, "hostname") {
			name = "hostname"
		}
		out[name] = l.GetValue()
	}
	return out
}
