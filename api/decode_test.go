package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// registerBody is the registration body of SPEC §3 with every field set.
const registerBody = `{"node_id":"gpu-node-1","machine_id":"m-1","address":"http://10.0.0.5:9200",
"pools":["pool-0","pool-1"],
"capabilities":{"gpus":[{"device_id":0,"uuid":"GPU-0f1e","name":"NVIDIA H200","vram_total_bytes":150754820096,"compute_capability":"9.0"}],
"cpu_cores":64,"ram_total_bytes":1081059102720},"version":"v0.3.0"}`

// heartbeatBody is the heartbeat body of SPEC §3 with every field set.
const heartbeatBody = `{"timestamp":"2025-06-01T12:00:00.123456789Z",
"pools":[{"pool_id":"pool-0","ready":true,"draining":false,"slots_total":4,"slots_free":3,
"vram_total_bytes":150754820096,"vram_free_bytes":100000000000,"engine":"llamacpp","engine_version":"b4747",
"url":"http://127.0.0.1:8081","models":["stories260K.gguf"]}],
"gpus":[{"device_id":0,"vram_free_bytes":100000000000,"utilization":0.75}]}`

var wantRegister = RegisterRequest{
	NodeID:    "gpu-node-1",
	MachineID: "m-1",
	Address:   "http://10.0.0.5:9200",
	Pools:     []string{"pool-0", "pool-1"},
	Capabilities: Capabilities{
		GPUs: []GPUInfo{{
			DeviceID: 0, UUID: "GPU-0f1e", Name: "NVIDIA H200",
			VRAMTotalBytes: 150754820096, ComputeCapability: "9.0",
		}},
		CPUCores:      64,
		RAMTotalBytes: 1081059102720,
	},
	Version: "v0.3.0",
}

// readers gives a body to Decode whole, one byte at a time and in halves,
// so the limit accounting is checked against every read pattern.
var readers = map[string]func(string) io.Reader{
	"whole":   func(s string) io.Reader { return strings.NewReader(s) },
	"onebyte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
	"half":    func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
}

// padTo returns a JSON object of exactly n bytes: {"node_id":"aaa..."}.
func padTo(t testing.TB, n int) string {
	t.Helper()
	const frame = `{"node_id":""}`
	if n < len(frame) {
		t.Fatalf("padTo(%d): shorter than %d", n, len(frame))
	}
	s := `{"node_id":"` + strings.Repeat("a", n-len(frame)) + `"}`
	if len(s) != n {
		t.Fatalf("padTo(%d) built %d bytes", n, len(s))
	}
	return s
}

func TestDecodeRegister(t *testing.T) {
	const limit = 64
	cases := []struct {
		name    string
		body    string
		limit   int64
		want    *RegisterRequest // checked when non-nil
		wantErr string           // substring; "" means success
		tooBig  bool             // errors.Is(err, ErrTooLarge)
	}{
		{name: "spec example", body: registerBody, limit: MaxBodyBytes, want: &wantRegister},
		{name: "unknown fields ignored", limit: MaxBodyBytes,
			body: `{"node_id":"n1","address":"http://h:1","future":{"x":[1,2,{"y":null}]},"labels":{"a":"b"}}`,
			want: &RegisterRequest{NodeID: "n1", Address: "http://h:1"}},
		{name: "trailing whitespace", body: "{\"node_id\":\"n1\"}\n\t \r\n", limit: MaxBodyBytes,
			want: &RegisterRequest{NodeID: "n1"}},
		{name: "wrong type string field", body: `{"node_id":5}`, limit: MaxBodyBytes, wantErr: `field "node_id"`},
		{name: "wrong type array field", body: `{"node_id":"n","pools":"pool-0"}`, limit: MaxBodyBytes, wantErr: `field "pools"`},
		{name: "wrong type nested field", body: `{"capabilities":{"gpus":[{"device_id":"zero"}]}}`, limit: MaxBodyBytes,
			wantErr: `device_id"`},
		{name: "negative into unsigned", body: `{"capabilities":{"ram_total_bytes":-1}}`, limit: MaxBodyBytes,
			wantErr: `ram_total_bytes"`},
		{name: "object where string", body: `{"address":{}}`, limit: MaxBodyBytes, wantErr: `field "address"`},
		{name: "top level array", body: `[]`, limit: MaxBodyBytes, wantErr: "want api.RegisterRequest"},
		{name: "trailing object", body: `{"node_id":"n1"} {"node_id":"n2"}`, limit: MaxBodyBytes, wantErr: "trailing data"},
		{name: "trailing garbage", body: `{"node_id":"n1"}x`, limit: MaxBodyBytes, wantErr: "trailing data"},
		{name: "trailing close bracket", body: `{"node_id":"n1"}]`, limit: MaxBodyBytes, wantErr: "trailing data"},
		{name: "trailing close brace", body: `{"node_id":"n1"}}`, limit: MaxBodyBytes, wantErr: "trailing data"},
		{name: "trailing comma", body: `{"node_id":"n1"},`, limit: MaxBodyBytes, wantErr: "trailing data"},
		{name: "empty body", body: ``, limit: MaxBodyBytes, wantErr: "empty body"},
		{name: "whitespace only", body: " \n\t", limit: MaxBodyBytes, wantErr: "empty body"},
		{name: "truncated", body: `{"node_id":"n1"`, limit: MaxBodyBytes, wantErr: "invalid JSON"},
		{name: "syntax error", body: `{node_id:"n1"}`, limit: MaxBodyBytes, wantErr: "invalid JSON"},
		{name: "exactly at limit", body: padTo(t, limit), limit: limit,
			want: &RegisterRequest{NodeID: strings.Repeat("a", limit-len(`{"node_id":""}`))}},
		{name: "value over limit", body: padTo(t, limit+1), limit: limit, tooBig: true},
		{name: "value far over limit", body: padTo(t, 10*limit), limit: limit, tooBig: true},
		{name: "limit reached by trailing whitespace", body: padTo(t, limit) + " ", limit: limit, tooBig: true},
		{name: "at limit including trailing whitespace", body: padTo(t, limit-1) + "\n", limit: limit,
			want: &RegisterRequest{NodeID: strings.Repeat("a", limit-1-len(`{"node_id":""}`))}},
		{name: "MaxBodyBytes exactly", body: padTo(t, MaxBodyBytes), limit: MaxBodyBytes,
			want: &RegisterRequest{NodeID: strings.Repeat("a", MaxBodyBytes-len(`{"node_id":""}`))}},
		{name: "MaxBodyBytes plus one", body: padTo(t, MaxBodyBytes+1), limit: MaxBodyBytes, tooBig: true},
	}
	for _, tc := range cases {
		for rname, mk := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				var got RegisterRequest
				err := Decode(mk(tc.body), tc.limit, &got)
				switch {
				case tc.tooBig:
					if !errors.Is(err, ErrTooLarge) {
						t.Fatalf("Decode: err = %v, want ErrTooLarge", err)
					}
				case tc.wantErr != "":
					if err == nil {
						t.Fatalf("Decode: no error, want one containing %q", tc.wantErr)
					}
					if errors.Is(err, ErrTooLarge) {
						t.Errorf("Decode: err = %v wraps ErrTooLarge; the body is within the limit", err)
					}
					if !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("Decode: err = %q, want it to contain %q", err, tc.wantErr)
					}
				default:
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					if tc.want != nil && !reflect.DeepEqual(got, *tc.want) {
						t.Errorf("Decode:\n got %+v\nwant %+v", got, *tc.want)
					}
				}
			})
		}
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	var got HeartbeatRequest
	if err := Decode(strings.NewReader(heartbeatBody), MaxBodyBytes, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	wantTS := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	if !got.Timestamp.Equal(wantTS) {
		t.Errorf("Timestamp = %v, want %v", got.Timestamp, wantTS)
	}
	wantPools := []PoolState{{
		PoolID: "pool-0", Ready: true, SlotsTotal: 4, SlotsFree: 3,
		VRAMTotalBytes: 150754820096, VRAMFreeBytes: 100000000000,
		Engine: "llamacpp", EngineVersion: "b4747", URL: "http://127.0.0.1:8081",
		Models: []string{"stories260K.gguf"},
	}}
	if !reflect.DeepEqual(got.Pools, wantPools) {
		t.Errorf("Pools:\n got %+v\nwant %+v", got.Pools, wantPools)
	}
	wantGPUs := []GPUState{{DeviceID: 0, VRAMFreeBytes: 100000000000, Utilization: 0.75}}
	if !reflect.DeepEqual(got.GPUs, wantGPUs) {
		t.Errorf("GPUs = %+v, want %+v", got.GPUs, wantGPUs)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	bad := []struct {
		name, body, wantErr string
	}{
		{"slots_total string", `{"pools":[{"pool_id":"p","slots_total":"4"}]}`, `field "pools.slots_total"`},
		{"ready number", `{"pools":[{"pool_id":"p","ready":1}]}`, `field "pools.ready"`},
		{"utilization string", `{"gpus":[{"utilization":"high"}]}`, `field "gpus.utilization"`},
		{"models not array", `{"pools":[{"pool_id":"p","models":"m"}]}`, `field "pools.models"`},
		{"fractional slots", `{"pools":[{"pool_id":"p","slots_total":1.5}]}`, `field "pools.slots_total"`},
		// time.Time decodes itself, so encoding/json cannot name the field;
		// the body is still refused (SPEC §8: wrong types are 400).
		{"timestamp number", `{"timestamp":5}`, "invalid JSON"},
		{"timestamp not RFC3339", `{"timestamp":"yesterday"}`, "invalid JSON"},
		{"timestamp bad month", `{"timestamp":"2025-13-01T00:00:00Z"}`, "invalid JSON"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var hb HeartbeatRequest
			err := Decode(strings.NewReader(tc.body), MaxBodyBytes, &hb)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Decode(%s): err = %v, want one containing %q", tc.body, err, tc.wantErr)
			}
		})
	}
}

// errReader fails after its data, like a client that hangs up mid-body.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

func TestDecodeReadError(t *testing.T) {
	var v RegisterRequest
	err := Decode(errReader{strings.NewReader(`{"node_id":`)}, MaxBodyBytes, &v)
	if err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode: err = %v, want a read error that is not ErrTooLarge", err)
	}
}

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		name       string
		body       string
		wantOK     bool
		wantStatus int
	}{
		{"valid", registerBody, true, 0},
		{"unknown field", `{"node_id":"n1","x":1}`, true, 0},
		{"wrong type", `{"node_id":1}`, false, http.StatusBadRequest},
		{"empty", ``, false, http.StatusBadRequest},
		{"syntax", `{`, false, http.StatusBadRequest},
		{"trailing", `{}{}`, false, http.StatusBadRequest},
		{"at limit", padTo(t, MaxBodyBytes), true, 0},
		{"over limit", padTo(t, MaxBodyBytes+1), false, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v2/nodes/register", strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			var v RegisterRequest
			ok := DecodeRequest(w, r, &v)
			if ok != tc.wantOK {
				t.Fatalf("DecodeRequest = %v, want %v (response %d %s)", ok, tc.wantOK, w.Code, w.Body)
			}
			if ok {
				if w.Body.Len() != 0 || len(w.Header()) != 0 {
					t.Errorf("DecodeRequest succeeded but wrote a response: %v %q", w.Header(), w.Body)
				}
				return
			}
			if w.Code != tc.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tc.wantStatus)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var e Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q is not the JSON envelope: %v", w.Body, err)
			}
			if e.Code != CodeInvalidParams || e.Message == "" || e.Retriable {
				t.Errorf("envelope = %+v, want code %s, a message, not retriable", e, CodeInvalidParams)
			}
		})
	}
}

func TestRegisterRequestValidate(t *testing.T) {
	valid := func() RegisterRequest {
		r := wantRegister
		r.Pools = append([]string(nil), wantRegister.Pools...)
		return r
	}
	cases := []struct {
		name    string
		mutate  func(*RegisterRequest)
		wantErr string // "" means valid
	}{
		{"spec example", func(*RegisterRequest) {}, ""},
		{"https address", func(r *RegisterRequest) { r.Address = "https://node.example:9200" }, ""},
		{"no pools", func(r *RegisterRequest) { r.Pools = nil }, ""},
		{"id with allowed punctuation", func(r *RegisterRequest) { r.NodeID = "Node_1.rack-2:a" }, ""},
		{"id at MaxIDLength", func(r *RegisterRequest) { r.NodeID = strings.Repeat("n", MaxIDLength) }, ""},
		{"missing node_id", func(r *RegisterRequest) { r.NodeID = "" }, "node_id is required"},
		{"node_id too long", func(r *RegisterRequest) { r.NodeID = strings.Repeat("n", MaxIDLength+1) }, "longer than"},
		{"node_id with slash", func(r *RegisterRequest) { r.NodeID = "a/b" }, "node_id"},
		{"node_id with space", func(r *RegisterRequest) { r.NodeID = "a b" }, "node_id"},
		{"node_id with newline", func(r *RegisterRequest) { r.NodeID = "a\nb" }, "node_id"},
		{"node_id with quote", func(r *RegisterRequest) { r.NodeID = `a"b` }, "node_id"},
		{"node_id non-ASCII letter", func(r *RegisterRequest) { r.NodeID = "nöde" }, "node_id"},
		{"node_id with percent", func(r *RegisterRequest) { r.NodeID = "a%2Fb" }, "node_id"},
		{"missing address", func(r *RegisterRequest) { r.Address = "" }, "address is required"},
		{"address without scheme", func(r *RegisterRequest) { r.Address = "10.0.0.5:9200" }, "http"},
		{"address other scheme", func(r *RegisterRequest) { r.Address = "ftp://10.0.0.5" }, "http"},
		{"address unix socket", func(r *RegisterRequest) { r.Address = "unix:///run/llorch.sock" }, "http"},
		{"empty pool id", func(r *RegisterRequest) { r.Pools = []string{"pool-0", ""} }, "pools[]"},
		{"bad pool id", func(r *RegisterRequest) { r.Pools = []string{"pool 0"} }, "pools[]"},
		{"pool id too long", func(r *RegisterRequest) { r.Pools = []string{strings.Repeat("p", MaxIDLength+1)} }, "pools[]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := valid()
			tc.mutate(&r)
			err := r.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate: err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHeartbeatRequestValidate(t *testing.T) {
	pool := func(id string, total, free int) PoolState {
		return PoolState{PoolID: id, Ready: true, SlotsTotal: total, SlotsFree: free, URL: "http://127.0.0.1:8081"}
	}
	cases := []struct {
		name    string
		pools   []PoolState
		wantErr string
	}{
		{"no pools", nil, ""},
		{"one pool", []PoolState{pool("pool-0", 4, 3)}, ""},
		{"all slots free", []PoolState{pool("pool-0", 4, 4)}, ""},
		{"no slots free", []PoolState{pool("pool-0", 4, 0)}, ""},
		{"zero slots", []PoolState{pool("pool-0", 0, 0)}, ""},
		{"missing pool_id", []PoolState{pool("", 1, 1)}, "pools[0].pool_id is required"},
		{"bad pool_id second", []PoolState{pool("pool-0", 1, 1), pool("pool/1", 1, 1)}, "pools[1].pool_id"},
		{"pool_id too long", []PoolState{pool(strings.Repeat("p", MaxIDLength+1), 1, 1)}, "longer than"},
		{"free over total", []PoolState{pool("pool-0", 2, 3)}, "pools[0]: slots_free 3, slots_total 2"},
		{"negative free", []PoolState{pool("pool-0", 2, -1)}, "pools[0]"},
		{"negative total", []PoolState{pool("pool-0", -1, -1)}, "pools[0]"},
		{"second pool bad slots", []PoolState{pool("a", 1, 1), pool("b", 1, 2)}, "pools[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hb := HeartbeatRequest{Timestamp: time.Now(), Pools: tc.pools}
			err := hb.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate: err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	cases := map[string]bool{
		"pool-0": true, "a": true, "A.b_c-d:e": true, "0": true,
		strings.Repeat("x", MaxIDLength): true, strings.Repeat("x", MaxIDLength+1): false,
		"": false, " ": false, "a/b": false, "a?b": false, "a#b": false, "é": false, "a\x00": false,
	}
	for id, want := range cases {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}
