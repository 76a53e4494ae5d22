package supervisor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []Spec
		wantErr    string
	}{
		{name: "defaults", yaml: "pools:\n  - id: pool-0\n    engine: sim\n",
			want: []Spec{{PoolID: "pool-0", Engine: "sim", Model: "model.gguf", Slots: DefaultSlots, CtxSize: DefaultCtxSize, healthTimeout: DefaultHealthTimeout}}},
		{name: "full", yaml: `pools:
  - id: big
    engine: /usr/local/bin/llama-server
    model: /models/llama-3-8b.gguf
    slots: 8
    ctx_size: 32768
    device_mask: "0,1"
    args: ["-ngl", "99"]
    health_timeout: 300s
  - id: small
    engine: sim
    args: ["--tokens-per-second", "80"]
`, want: []Spec{
			{PoolID: "big", Engine: "/usr/local/bin/llama-server", Model: "/models/llama-3-8b.gguf", Slots: 8, CtxSize: 32768, DeviceMask: "0,1", Args: []string{"-ngl", "99"}, HealthTimeout: "300s", healthTimeout: 300 * time.Second},
			{PoolID: "small", Engine: "sim", Model: "model.gguf", Slots: DefaultSlots, CtxSize: DefaultCtxSize, Args: []string{"--tokens-per-second", "80"}, healthTimeout: DefaultHealthTimeout},
		}},
		// Errors name YAML and the line at fault (not JSON: the file is
		// not converted to JSON on the way).
		{name: "unknown key", yaml: "pools:\n  - id: p\n    engine: sim\n    slot: 4\n", wantErr: `YAML: line 4: unknown key "slot"`},
		{name: "unknown top-level key", yaml: "pool:\n  - id: p\n", wantErr: `YAML: line 1: unknown key "pool"`},
		{name: "wrong type", yaml: "pools:\n  - id: p\n    engine: sim\n    slots: four\n", wantErr: "YAML: line 4: cannot unmarshal !!str `four` into int"},
		{name: "not yaml", yaml: "pools:\n  - id: p\n    engine: sim: x\n", wantErr: "YAML: line 3: mapping values are not allowed in this context"},
		{name: "duplicate key", yaml: "pools:\n  - id: p\n    id: q\n    engine: sim\n", wantErr: "YAML: line 3"},
		{name: "no pools", yaml: "pools: []\n", wantErr: "no pools"},
		{name: "empty file", yaml: "", wantErr: "no pools"},
		{name: "missing engine", yaml: "pools:\n  - id: p\n", wantErr: "line 2: pools[0]: engine is required"},
		{name: "llama-server needs a model", yaml: "pools:\n  - id: p\n    engine: llama-server\n", wantErr: "line 2: pools[0]: model is required"},
		{name: "bad id", yaml: "pools:\n  - id: 'a b'\n    engine: sim\n", wantErr: "id \"a b\": only letters"},
		{name: "duplicate", yaml: "pools:\n  - {id: p, engine: sim}\n  - {id: p, engine: sim}\n", wantErr: `line 3: pool "p" declared twice`},
		{name: "ctx below slots", yaml: "pools:\n  - {id: p, engine: sim, slots: 8, ctx_size: 4}\n", wantErr: "ctx_size >= slots"},
		{name: "bad timeout", yaml: "pools:\n  - {id: p, engine: sim, health_timeout: soon}\n", wantErr: "health_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pools.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if msg := err.Error(); strings.Contains(msg, "JSON") || strings.Contains(msg, "\n") || !strings.Contains(msg, "pools config "+path) {
					t.Fatalf("err = %q: want one line naming the file, never JSON", msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	s := Spec{PoolID: "p", Engine: "sim", Model: "/m/x.gguf", Slots: 2, CtxSize: 512, Args: []string{"--tokens-per-second", "9"}}
	bin, args := s.command("/opt/llorch", "127.0.0.1", 4242)
	want := "sim-engine -m /m/x.gguf --host 127.0.0.1 --port 4242 -np 2 -c 512 --metrics --slots --tokens-per-second 9"
	if bin != "/opt/llorch" || strings.Join(args, " ") != want {
		t.Fatalf("sim: %s %v", bin, args)
	}
	s.Engine = "/usr/bin/llama-server"
	bin, args = s.command("/opt/llorch", "127.0.0.1", 4242)
	if bin != "/usr/bin/llama-server" || strings.Join(args, " ") != strings.TrimPrefix(want, "sim-engine ") {
		t.Fatalf("llama-server: %s %v", bin, args)
	}
	// --engine-host: a control plane on another machine reaches the engine.
	if _, args = s.command("/opt/llorch", "10.1.2.3", 4242); !strings.Contains(strings.Join(args, " "), "--host 10.1.2.3 --port 4242") {
		t.Fatalf("engine host: %v", args)
	}
}
