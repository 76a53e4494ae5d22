package handoff

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/llorch/llorch/api"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		specExample,
		minimal(""),
		minimal(`"slots_total":6,"slots_free":2`),
		minimal(`"slots":4,"slots_total":9,"slots_free":0`),
		minimal(`"slots":null,"slots_free":null`),
		minimal(`"slots":0`),
		minimal(`"slots":-1`),
		minimal(`"slots_free":2`),
		minimal(`"slots":"4"`),
		minimal(`"model":{"path":"/m/a.gguf"},"pid":-1`),
		minimal(`"SLOTS":3,"Pool_ID":"p2"`),
		`{"pool_id":"p","engine_version":"v","url":"https://[::1]:8081/x?y"}`,
		`{"pool_id":"p","engine_version":"v","url":"127.0.0.1:8081"}`,
		`{"pool_id":"p p","engine_version":"v","url":"http://h:1"}`,
		"{\"pool_id\":\"p\",\"engine_version\":\"\xff\",\"url\":\"http://h:1\"}",
		`{"pool_id":"p","engine_version":"\ud800","url":"http://h:1"}`,
		`null`,
		`[]`,
		`{}`,
		`{`,
		``,
		"\x00\x01garbage",
		specExample + specExample,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Parse error %v wraps neither ErrInvalid nor ErrTooLarge", err)
			}
			if (len(data) > MaxFileBytes) != errors.Is(err, ErrTooLarge) {
				t.Fatalf("Parse(%d bytes): err = %v; ErrTooLarge iff over %d bytes", len(data), err, MaxFileBytes)
			}
			return
		}
		if h.PoolID == "" || !api.ValidID(h.PoolID) {
			t.Fatalf("accepted pool_id %q", h.PoolID)
		}
		if h.URL == "" || h.EngineVersion == "" {
			t.Fatalf("accepted url %q, engine_version %q", h.URL, h.EngineVersion)
		}
		if h.SlotsTotal < 1 || h.SlotsFree < 0 || h.SlotsFree > h.SlotsTotal {
			t.Fatalf("accepted slots_total %d, slots_free %d", h.SlotsTotal, h.SlotsFree)
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", h, err)
		}
		if len(b) > MaxFileBytes {
			return // escaping can grow a file near the limit past it
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(h)) of %s: %v", b, err)
		}
		if !reflect.DeepEqual(h, again) {
			t.Fatalf("round trip changed the handoff:\n first %#v\nsecond %#v", h, again)
		}
	})
}
