package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
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
	// CodeShuttingDown: the control plane is shutting down. New work is
	// refused (503), queued tasks end with it at once, and tasks still
	// running after the shutdown grace are stopped with it. Retriable:
	// another control plane, or this one restarted, can take the task.
	CodeShuttingDown = "SHUTTING_DOWN"
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

// OpenAIError is the error body OpenAI clients read,
// {"error":{"message","type","code"}}: the OpenAI routes answer every
// failure in it. llorch's retry hints ride along in the same object.
type OpenAIError struct {
	Error OpenAIErrorDetail `json:"error"`
}

// OpenAIErrorDetail is the object under "error".
type OpenAIErrorDetail struct {
	Message      string  `json:"message"`
	Type         string  `json:"type"`
	Code         string  `json:"code"`
	Param        *string `json:"param"`
	Retriable    bool    `json:"retriable,omitempty"`
	RetryAfterMS int64   `json:"retry_after_ms,omitempty"`
	PolicyLabel  string  `json:"policy_label,omitempty"`
}

// OpenAIErrorOf puts e in OpenAI's shape; status picks OpenAI's error type.
func OpenAIErrorOf(status int, e Error) OpenAIError {
	return OpenAIError{Error: OpenAIErrorDetail{Message: e.Message, Type: openAIErrorType(status), Code: e.Code,
		Retriable: e.Retriable, RetryAfterMS: e.RetryAfterMS, PolicyLabel: e.PolicyLabel}}
}

// openAIErrorType is the "type" OpenAI's API gives errors of status.
func openAIErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

// WriteOpenAIError writes e in OpenAI's shape, with Retry-After as
// WriteError sets it.
func WriteOpenAIError(w http.ResponseWriter, status int, e Error) {
	if e.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMS+999)/1000, 10))
	}
	WriteJSON(w, status, OpenAIErrorOf(status, e))
}

// IsOpenAIPath reports whether path is one of the OpenAI-compatible routes,
// whose errors take OpenAI's shape.
func IsOpenAIPath(path string) bool { return strings.HasPrefix(path, "/v1/") }

// WriteErrorFor writes e in the shape the route of r answers in: OpenAI's
// on /v1/, llorch's envelope elsewhere.
func WriteErrorFor(w http.ResponseWriter, r *http.Request, status int, e Error) {
	if IsOpenAIPath(r.URL.Path) {
		WriteOpenAIError(w, status, e)
		return
	}
	WriteError(w, status, e)
}
