package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// decodeSeeds are malformed bodies shared by both fuzz targets.
var decodeSeeds = []string{
	``,
	` `,
	`null`,
	`{}`,
	`[]`,
	`"x"`,
	`{`,
	`}`,
	`{}]`,
	`{}{}`,
	`{"node_id":}`,
	`{"node_id":"\ud800"}`,
	"{\"node_id\":\"\xff\xfe\"}",
	`{"pools":[{"pool_id":"p","slots_total":1e400}]}`,
	`{"pools":[{"pool_id":"p","slots_total":-0}]}`,
	`{"NODE_ID":"upper","Address":"http://h:1"}`,
	`{"node_id":"a","node_id":"b","address":"http://h:1"}`,
}

func FuzzDecodeRegister(f *testing.F) {
	for _, s := range append([]string{
		registerBody,
		`{"node_id":"n1","address":"https://h:1"}`,
		`{"node_id":"n1","address":"http://h:1","pools":[],"capabilities":{"gpus":null}}`,
		`{"node_id":"n1","address":"http://h:1","unknown":[1,{"a":2}]}`,
		`{"node_id":"n 1","address":"http://h:1"}`,
		`{"node_id":"n1","address":"h:1"}`,
		`{"node_id":"n1","address":"http://h:1","capabilities":{"gpus":[{"device_id":"0"}]}}`,
		`{"node_id":"n1","address":"http://h:1","capabilities":{"ram_total_bytes":18446744073709551615}}`,
	}, decodeSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var first RegisterRequest
		err := Decode(bytes.NewReader(body), MaxBodyBytes, &first)
		if err != nil {
			if len(body) <= MaxBodyBytes && errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode(%d bytes) = ErrTooLarge under the limit", len(body))
			}
			return
		}
		if first.Validate() != nil {
			return
		}
		again, err := json.Marshal(first)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", first, err)
		}
		var second RegisterRequest
		// The re-encoded body exactly at its own length must be accepted.
		if err := Decode(bytes.NewReader(again), int64(len(again)), &second); err != nil {
			t.Fatalf("Decode(Marshal(v)) of %s: %v", again, err)
		}
		if err := second.Validate(); err != nil {
			t.Fatalf("round trip no longer validates: %v\n%s", err, again)
		}
		if !reflect.DeepEqual(first, second) {
			t.Fatalf("round trip changed the value:\n first %#v\nsecond %#v", first, second)
		}
	})
}

func FuzzDecodeHeartbeat(f *testing.F) {
	for _, s := range append([]string{
		heartbeatBody,
		`{"timestamp":"2025-06-01T12:00:00Z","pools":[],"gpus":[]}`,
		`{"timestamp":"2025-06-01T14:00:00.5+02:00","pools":[{"pool_id":"p","slots_total":1,"slots_free":1}]}`,
		`{"timestamp":"0000-01-01T00:00:00+01:00"}`,
		`{"timestamp":"9999-12-31T23:59:59.999999999-23:59"}`,
		`{"timestamp":null,"draining":true}`,
		`{"timestamp":5}`,
		`{"timestamp":"2025-13-01T00:00:00Z"}`,
		`{"pools":[{"pool_id":"p","slots_total":1,"slots_free":2}]}`,
		`{"pools":[{"pool_id":"","slots_total":1,"slots_free":1}]}`,
		`{"gpus":[{"device_id":0,"utilization":1e308}]}`,
		`{"gpus":[{"device_id":0,"utilization":-0}]}`,
	}, decodeSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var first HeartbeatRequest
		err := Decode(bytes.NewReader(body), MaxBodyBytes, &first)
		if err != nil {
			if len(body) <= MaxBodyBytes && errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode(%d bytes) = ErrTooLarge under the limit", len(body))
			}
			return
		}
		if first.Validate() != nil {
			return
		}
		again, err := json.Marshal(first)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", first, err)
		}
		var second HeartbeatRequest
		if err := Decode(bytes.NewReader(again), int64(len(again)), &second); err != nil {
			t.Fatalf("Decode(Marshal(v)) of %s: %v", again, err)
		}
		if err := second.Validate(); err != nil {
			t.Fatalf("round trip no longer validates: %v\n%s", err, again)
		}
		// A time's Location pointer need not survive encoding; its instant
		// and its offset must.
		if !first.Timestamp.Equal(second.Timestamp) {
			t.Fatalf("timestamp %v became %v", first.Timestamp, second.Timestamp)
		}
		_, off1 := first.Timestamp.Zone()
		_, off2 := second.Timestamp.Zone()
		if off1 != off2 {
			t.Fatalf("timestamp offset %d became %d", off1, off2)
		}
		first.Timestamp, second.Timestamp = time.Time{}, time.Time{}
		if !reflect.DeepEqual(first, second) {
			t.Fatalf("round trip changed the value:\n first %#v\nsecond %#v", first, second)
		}
	})
}
