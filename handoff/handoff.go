package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/llorch/llorch/api"
)

// MaxFileBytes bounds a handoff file; larger ones are refused unread.
const MaxFileBytes = 1 << 20

// Handoff is one ready engine replica, as announced by its handoff file.
type Handoff struct {
	PoolID        string `json:"pool_id"`
	ReplicaID     string `json:"replica_id,omitempty"`
	Engine        string `json:"engine,omitempty"`
	EngineVersion string `json:"engine_version"`
	URL           string `json:"url"`
	// SlotsTotal and SlotsFree are filled from "slots" or its aliases
	// "slots_total"/"slots_free" by Parse.
	SlotsTotal int    `json:"slots_total"`
	SlotsFree  int    `json:"slots_free"`
	DeviceMask string `json:"device_mask,omitempty"`
	Model      Model  `json:"model"`
	PID        int    `json:"pid,omitempty"`
}

// Model names the model an engine serves.
type Model struct {
	ID   string `json:"id,omitempty"`
	Path string `json:"path,omitempty"`
}

// Name is the model's id, else the file name of its path.
func (m Model) Name() string {
	if m.ID != "" {
		return m.ID
	}
	if m.Path != "" {
		return filepath.Base(m.Path)
	}
	return ""
}

// wire accepts "slots" and its aliases as pointers, to tell absent from 0.
type wire struct {
	Handoff
	Slots      *int `json:"slots"`
	SlotsTotal *int `json:"slots_total"`
	SlotsFree  *int `json:"slots_free"`
}

// Errors Parse and ReadFile wrap, so callers can count outcomes.
var (
	ErrInvalid  = errors.New("invalid handoff file")
	ErrTooLarge = errors.New("handoff file too large")
)

// Parse validates one handoff file's bytes.
func Parse(data []byte) (Handoff, error) {
	if len(data) > MaxFileBytes {
		return Handoff{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxFileBytes)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return Handoff{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	h := w.Handoff
	switch {
	case h.PoolID == "":
		return Handoff{}, fmt.Errorf("%w: pool_id is required", ErrInvalid)
	case !api.ValidID(h.PoolID):
		return Handoff{}, fmt.Errorf("%w: pool_id %q: only letters, digits and -_.: are allowed", ErrInvalid, h.PoolID)
	case h.EngineVersion == "":
		return Handoff{}, fmt.Errorf("%w: engine_version is required", ErrInvalid)
	case h.URL == "":
		return Handoff{}, fmt.Errorf("%w: url is required", ErrInvalid)
	}
	if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Handoff{}, fmt.Errorf("%w: url %q: want http(s)://host:port", ErrInvalid, h.URL)
	}
	h.SlotsTotal = 1
	switch {
	case w.Slots != nil:
		h.SlotsTotal = *w.Slots
	case w.SlotsTotal != nil:
		h.SlotsTotal = *w.SlotsTotal
	}
	h.SlotsFree = h.SlotsTotal
	if w.SlotsFree != nil {
		h.SlotsFree = *w.SlotsFree
	}
	if h.SlotsTotal < 1 || h.SlotsFree < 0 || h.SlotsFree > h.SlotsTotal {
		return Handoff{}, fmt.Errorf("%w: slots %d free %d: want total >= 1 and 0 <= free <= total", ErrInvalid, h.SlotsTotal, h.SlotsFree)
	}
	return h, nil
}

// ReadFile reads and parses path without reading more than MaxFileBytes+1.
func ReadFile(path string) (Handoff, error) {
	f, err := os.Open(path)
	if err != nil {
		return Handoff{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return Handoff{}, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(data)
}

// IsHandoffName reports whether a directory entry can be a handoff file:
// "*.json", not hidden. Writers' temp files (".x.json.tmp", "x.json.tmp")
// never match.
func IsHandoffName(name string) bool {
	return strings.HasSuffix(name, ".json") && !strings.HasPrefix(name, ".")
}

// WriteFile writes h atomically into dir as <pool_id>_<replica_id>.json: a
// temp file, fsync, rename. It returns the final path.
func WriteFile(dir string, h Handoff) (string, error) {
	replica := h.ReplicaID
	if replica == "" {
		replica = "r0"
	}
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode handoff: %w", err)
	}
	final := filepath.Join(dir, h.PoolID+"_"+replica+".json")
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(final)+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("write handoff: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write handoff %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("sync handoff %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("close handoff %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("rename handoff into place: %w", err)
	}
	return final, nil
}
