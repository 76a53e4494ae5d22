package api

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of SPEC §5.
const (
	CodeInvalidParams     = "INVALID_PARAMS"
	CodeDeadlineUnmet     = "DEADLINE_UNMET"
	CodeAdmissionReject   = "ADMISSION_REJECT"
	CodeQueueFullDropLRU  = "QUEUE_FULL_DROP_LRU"
	CodePoolUnavailable   = "POOL_UNAVAILABLE"
	CodeNodeUnavailable   = "NODE_UNAVAILABLE"
	CodeModelNotAvailable = "MODEL_NOT_AVAILABLE"
	CodeWorkerReset       = "WORKER_RESET"
	CodeInternal          = "INTERNAL"
	// CodeUnauthorized and CodeNotFound cover statuses SPEC §5 leaves to
	// HTTP convention (401, 404).
	CodeUnauthorized = "UNAUTHORIZED"
	CodeNotFound     = "NOT_FOUND"
)

// Error is the error envelope of every llorch HTTP error.
type Error struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	Engine       string `json:"engine,omitempty"`
	Retriable    bool   `json:"retriable"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	PolicyLabel  string `json:"policy_label,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// WriteJSON writes v as the JSON body of a response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status line is gone; an encode error here means the client left.
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the error envelope. A 429 or 503 with RetryAfterMS also
// gets a Retry-After header in whole seconds, rounded up.
func WriteError(w http.ResponseWriter, status int, e Error) {
	if e.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMS+999)/1000, 10))
	}
	WriteJSON(w, status, e)
}
