package handoff

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// specExample is the handoff file of SPEC §4.
const specExample = `{"pool_id":"pool-0","replica_id":"r0","engine":"llamacpp","engine_version":"b4747","url":"http://127.0.0.1:8081","slots":4,"device_mask":"GPU0","model":{"id":"stories260K","path":"/models/stories260K.gguf"},"pid":1234}`

var specHandoff = Handoff{
	PoolID: "pool-0", ReplicaID: "r0", Engine: "llamacpp", EngineVersion: "b4747",
	URL: "http://127.0.0.1:8081", SlotsTotal: 4, SlotsFree: 4, DeviceMask: "GPU0",
	Model: Model{ID: "stories260K", Path: "/models/stories260K.gguf"}, PID: 1234,
}

// minimal returns the required fields plus extra ones, as a JSON object.
func minimal(extra string) string {
	s := `{"pool_id":"pool-0","engine_version":"b4747","url":"http://127.0.0.1:8081"`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func TestParse(t *testing.T) {
	base := Handoff{PoolID: "pool-0", EngineVersion: "b4747", URL: "http://127.0.0.1:8081", SlotsTotal: 1, SlotsFree: 1}
	with := func(f func(*Handoff)) *Handoff {
		h := base
		f(&h)
		return &h
	}
	cases := []struct {
		name    string
		data    string
		want    *Handoff
		wantErr error  // ErrInvalid or ErrTooLarge when failing
		errHas  string // substring of the error
	}{
		{name: "spec example", data: specExample, want: &specHandoff},
		{name: "required fields only, slots default 1", data: minimal(""), want: &base},
		{name: "https url", data: `{"pool_id":"p","engine_version":"v","url":"https://engine.local:443"}`,
			want: &Handoff{PoolID: "p", EngineVersion: "v", URL: "https://engine.local:443", SlotsTotal: 1, SlotsFree: 1}},
		{name: "unknown fields ignored", data: minimal(`"future":{"a":[1,2]},"labels":null`), want: &base},
		{name: "slots", data: minimal(`"slots":8`), want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 8, 8 })},
		{name: "slots_total alias", data: minimal(`"slots_total":6`), want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 6, 6 })},
		{name: "slots_total and slots_free aliases", data: minimal(`"slots_total":6,"slots_free":2`),
			want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 6, 2 })},
		{name: "slots with slots_free", data: minimal(`"slots":4,"slots_free":0`),
			want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 4, 0 })},
		{name: "slots wins over slots_total", data: minimal(`"slots":4,"slots_total":9`),
			want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 4, 4 })},
		{name: "slots_free alone within default", data: minimal(`"slots_free":0`),
			want: with(func(h *Handoff) { h.SlotsTotal, h.SlotsFree = 1, 0 })},
		{name: "null slots is absent", data: minimal(`"slots":null`), want: &base},
		{name: "model path only", data: minimal(`"model":{"path":"/m/a.gguf"}`),
			want: with(func(h *Handoff) { h.Model = Model{Path: "/m/a.gguf"} })},

		{name: "missing pool_id", data: `{"engine_version":"b1","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "pool_id is required"},
		{name: "empty pool_id", data: `{"pool_id":"","engine_version":"b1","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "pool_id is required"},
		{name: "bad pool_id", data: `{"pool_id":"pool 0","engine_version":"b1","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "pool_id"},
		{name: "pool_id with slash", data: `{"pool_id":"../x","engine_version":"b1","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "pool_id"},
		{name: "missing engine_version", data: `{"pool_id":"p","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "engine_version is required"},
		{name: "missing url", data: `{"pool_id":"p","engine_version":"b1"}`, wantErr: ErrInvalid, errHas: "url is required"},
		{name: "url without scheme", data: `{"pool_id":"p","engine_version":"b1","url":"127.0.0.1:8081"}`, wantErr: ErrInvalid, errHas: "url"},
		{name: "url host:port without scheme", data: `{"pool_id":"p","engine_version":"b1","url":"localhost:8081"}`, wantErr: ErrInvalid, errHas: "url"},
		{name: "url other scheme", data: `{"pool_id":"p","engine_version":"b1","url":"unix:///run/e.sock"}`, wantErr: ErrInvalid, errHas: "url"},
		{name: "url without host", data: `{"pool_id":"p","engine_version":"b1","url":"http://"}`, wantErr: ErrInvalid, errHas: "url"},
		{name: "url unparsable", data: `{"pool_id":"p","engine_version":"b1","url":"http://[::1"}`, wantErr: ErrInvalid, errHas: "url"},
		{name: "slots zero", data: minimal(`"slots":0`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots negative", data: minimal(`"slots":-2`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots_total zero", data: minimal(`"slots_total":0`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots_free over total", data: minimal(`"slots":2,"slots_free":3`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots_free over default", data: minimal(`"slots_free":2`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots_free negative", data: minimal(`"slots":2,"slots_free":-1`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots string", data: minimal(`"slots":"4"`), wantErr: ErrInvalid, errHas: "slots"},
		{name: "slots fractional", data: minimal(`"slots":1.5`), wantErr: ErrInvalid},
		{name: "pid string", data: minimal(`"pid":"1234"`), wantErr: ErrInvalid, errHas: "pid"},
		{name: "model string", data: minimal(`"model":"stories"`), wantErr: ErrInvalid, errHas: "model"},
		{name: "pool_id number", data: `{"pool_id":0,"engine_version":"b1","url":"http://h:1"}`, wantErr: ErrInvalid, errHas: "pool_id"},
		{name: "not JSON", data: `pool_id=pool-0`, wantErr: ErrInvalid},
		{name: "empty file", data: ``, wantErr: ErrInvalid},
		{name: "truncated", data: specExample[:len(specExample)/2], wantErr: ErrInvalid},
		{name: "null", data: `null`, wantErr: ErrInvalid, errHas: "pool_id is required"},
		{name: "array", data: `[` + specExample + `]`, wantErr: ErrInvalid},
		{name: "two objects", data: specExample + specExample, wantErr: ErrInvalid},
		{name: "at MaxFileBytes", data: minimal(`"pad":"` + strings.Repeat("x", MaxFileBytes-len(minimal(`"pad":""`))) + `"`), want: &base},
		{name: "over MaxFileBytes", data: minimal(`"pad":"` + strings.Repeat("x", MaxFileBytes+1-len(minimal(`"pad":""`))) + `"`),
			wantErr: ErrTooLarge},
		{name: "garbage over MaxFileBytes", data: strings.Repeat("\x00", 2*MaxFileBytes), wantErr: ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.data))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if !reflect.DeepEqual(got, *tc.want) {
					t.Errorf("Parse:\n got %+v\nwant %+v", got, *tc.want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Parse: err = %v, want %v", err, tc.wantErr)
			}
			other := ErrTooLarge
			if errors.Is(tc.wantErr, ErrTooLarge) {
				other = ErrInvalid
			}
			if errors.Is(err, other) {
				t.Errorf("Parse: err = %v wraps both ErrInvalid and ErrTooLarge", err)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Parse: err = %q, want it to mention %q", err, tc.errHas)
			}
			if !reflect.DeepEqual(got, Handoff{}) {
				t.Errorf("Parse returned %+v with an error, want the zero Handoff", got)
			}
		})
	}
}

func TestModelName(t *testing.T) {
	cases := []struct {
		m    Model
		want string
	}{
		{Model{ID: "llama-3-8b", Path: "/models/x.gguf"}, "llama-3-8b"},
		{Model{Path: "/models/stories260K.gguf"}, "stories260K.gguf"},
		{Model{Path: "stories260K.gguf"}, "stories260K.gguf"},
		{Model{Path: "../../models/a/b.gguf"}, "b.gguf"},
		{Model{ID: "only-id"}, "only-id"},
		{Model{}, ""},
	}
	for _, tc := range cases {
		if got := tc.m.Name(); got != tc.want {
			t.Errorf("%+v.Name() = %q, want %q", tc.m, got, tc.want)
		}
	}
}

func TestIsHandoffName(t *testing.T) {
	cases := map[string]bool{
		"pool-0_r0.json":          true,
		"x.json":                  true,
		"a.b.json":                true,
		".pool-0_r0.json":         false,
		".pool-0_r0.json.123.tmp": false,
		"pool-0_r0.json.tmp":      false,
		"pool-0_r0.json~":         false,
		"pool-0_r0.JSON":          false,
		"pool-0_r0.txt":           false,
		"json":                    false,
		".json":                   false,
		"":                        false,
	}
	for name, want := range cases {
		if got := IsHandoffName(name); got != want {
			t.Errorf("IsHandoffName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestWriteFileReadFile(t *testing.T) {
	cases := []struct {
		name     string
		h        Handoff
		wantBase string
	}{
		{"spec example", specHandoff, "pool-0_r0.json"},
		{"replica defaults to r0", Handoff{PoolID: "pool-1", EngineVersion: "b1", URL: "https://h:1", SlotsTotal: 2, SlotsFree: 1}, "pool-1_r0.json"},
		{"other replica", Handoff{PoolID: "pool-1", ReplicaID: "r7", EngineVersion: "b1", URL: "http://h:1", SlotsTotal: 1, SlotsFree: 0, Model: Model{Path: "/m/a.gguf"}}, "pool-1_r7.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, err := WriteFile(dir, tc.h)
			if err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			if path != filepath.Join(dir, tc.wantBase) {
				t.Errorf("WriteFile path = %q, want %q", path, filepath.Join(dir, tc.wantBase))
			}
			got, err := ReadFile(path)
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			if !reflect.DeepEqual(got, tc.h) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.h)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != tc.wantBase {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("dir holds %q, want only %q (no temp file left)", names, tc.wantBase)
			}
		})
	}
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	h := specHandoff
	if _, err := WriteFile(dir, h); err != nil {
		t.Fatal(err)
	}
	h.SlotsFree = 1
	h.PID = 99
	path, err := WriteFile(dir, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Errorf("after replace:\n got %+v\nwant %+v", got, h)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries after a replace, want 1", len(entries))
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	if _, err := WriteFile(dir, specHandoff); err == nil {
		t.Fatal("WriteFile into a missing directory: no error")
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFile(filepath.Join(dir, "absent.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(absent): err = %v, want fs.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.json")
	// A valid object followed by a lot of whitespace: only the size is wrong.
	if err := os.WriteFile(big, []byte(specExample+strings.Repeat(" ", MaxFileBytes)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile(big): err = %v, want ErrTooLarge", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadFile(bad): err = %v, want ErrInvalid", err)
	}
	if _, err := ReadFile(dir); err == nil || errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile(a directory): err = %v, want a read error", err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"auto": ModeAuto, "fsnotify": ModeFsnotify, "poll": ModePoll} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Poll", "inotify", "auto "} {
		if _, err := ParseMode(in); err == nil {
			t.Errorf("ParseMode(%q): no error", in)
		}
	}
}

// The JSON a Handoff marshals to is itself a valid handoff file: the agent
// and tests write files with WriteFile and expect Parse to accept them.
func TestMarshalIsParsable(t *testing.T) {
	b, err := json.Marshal(specHandoff)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal(spec)): %v", err)
	}
	if !reflect.DeepEqual(got, specHandoff) {
		t.Errorf("got %+v, want %+v", got, specHandoff)
	}
}
