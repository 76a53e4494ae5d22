package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxBodyBytes bounds every request body llorch decodes. A heartbeat from a
// node with 8 GPUs and a dozen pools is a few KiB; 1 MiB leaves room without
// letting one client pin memory.
const MaxBodyBytes = 1 << 20

// ErrTooLarge is returned by Decode for a body over its limit.
var ErrTooLarge = errors.New("body too large")

// Decode reads one JSON value from r into v, refusing bodies over limit bytes,
// trailing data and wrong types. Unknown fields are ignored (SPEC §8).
func Decode(r io.Reader, limit int64, v any) error {
	lr := &io.LimitedReader{R: r, N: limit + 1}
	dec := json.NewDecoder(lr)
	if err := dec.Decode(v); err != nil {
		if lr.N <= 0 {
			return fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return fmt.Errorf("field %q: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
		}
		if errors.Is(err, io.EOF) {
			return errors.New("empty body")
		}
		return fmt.Errorf("invalid JSON: %w", err)
	}
	// Only whitespace may follow the value. dec.More alone would let a stray
	// "]" or "}" through, since it reports the end of an array or object.
	_, err := dec.Token()
	if lr.N <= 0 {
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
	}
	if !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON: trailing data after the object")
	}
	return nil
}

// DecodeRequest decodes a request body with Decode and MaxBodyBytes, writing a
// 400 INVALID_PARAMS (or 413 for an oversized body) when it fails. It reports
// whether the handler may go on.
func DecodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := Decode(r.Body, MaxBodyBytes, v); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		WriteError(w, status, Error{Code: CodeInvalidParams, Message: err.Error()})
		return false
	}
	return true
}

// Validate checks the fields a registration cannot do without.
func (r *RegisterRequest) Validate() error {
	if err := validID("node_id", r.NodeID); err != nil {
		return err
	}
	if r.Address == "" {
		return errors.New("address is required")
	}
	if !strings.HasPrefix(r.Address, "http://") && !strings.HasPrefix(r.Address, "https://") {
		return fmt.Errorf("address %q: want an http:// or https:// URL", r.Address)
	}
	for _, p := range r.Pools {
		if err := validID("pools[]", p); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a heartbeat's pool entries.
func (h *HeartbeatRequest) Validate() error {
	for i, p := range h.Pools {
		if err := validID(fmt.Sprintf("pools[%d].pool_id", i), p.PoolID); err != nil {
			return err
		}
		if p.SlotsTotal < 0 || p.SlotsFree < 0 || p.SlotsFree > p.SlotsTotal {
			return fmt.Errorf("pools[%d]: slots_free %d, slots_total %d: want 0 <= free <= total", i, p.SlotsFree, p.SlotsTotal)
		}
	}
	return nil
}

// MaxIDLength bounds node and pool ids; they become label values and URL
// path segments.
const MaxIDLength = 253

// ValidID reports whether id can name a node or pool.
func ValidID(id string) bool { return validID("", id) == nil }

func validID(field, id string) error {
	if id == "" {
		return fmt.Errorf("%s is required", field)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%s longer than %d bytes", field, MaxIDLength)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':'
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits and -_.: are allowed", field, id)
		}
	}
	return nil
}

// Validate checks a task request and fills defaults.
func (t *TaskRequest) Validate() error {
	if t.TaskID != "" {
		if err := validID("task_id", t.TaskID); err != nil {
			return err
		}
	}
	if t.Prompt == "" {
		return errors.New("prompt is required")
	}
	switch t.Workload {
	case "", "completion":
	default:
		return fmt.Errorf("workload %q: only completion is supported", t.Workload)
	}
	switch t.Engine {
	case "", "llamacpp":
	default:
		return fmt.Errorf("engine %q: only llamacpp is supported", t.Engine)
	}
	switch t.Priority {
	case "", "interactive", "batch":
	default:
		return fmt.Errorf("priority %q: want interactive or batch", t.Priority)
	}
	if t.MaxTokens < 0 || t.DeadlineMS < 0 || t.Ctx < 0 {
		return errors.New("max_tokens, deadline_ms and ctx must be >= 0")
	}
	if p := t.Placement; p != nil && t.DeviceMask != "" && p.DeviceMask != "" && p.DeviceMask != t.DeviceMask {
		return fmt.Errorf("device_mask %q and placement.device_mask %q differ: give one", t.DeviceMask, p.DeviceMask)
	}
	if p := t.Placement; p != nil {
		switch p.Mode {
		case "", "auto", "prefer":
		case "pin":
			if p.PinPoolID == "" {
				return errors.New("placement.mode pin needs placement.pin_pool_id")
			}
		default:
			return fmt.Errorf("placement.mode %q: want auto, pin or prefer", p.Mode)
		}
	}
	return nil
}
