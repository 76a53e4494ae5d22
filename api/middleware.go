package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
)

// CorrelationHeader names the header that ties a request to its logs and
// traces across the control plane, node agents and engines.
const CorrelationHeader = "X-Correlation-Id"

// maxCorrelationLen bounds an echoed correlation id; longer ones are replaced.
const maxCorrelationLen = 128

// WithCorrelationID echoes the request's X-Correlation-Id on the response, or
// generates one, so every response (SPEC §5) carries it.
func WithCorrelationID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(CorrelationHeader)
		if id == "" || len(id) > maxCorrelationLen || strings.ContainsAny(id, "\r\n") {
			id = NewCorrelationID()
			r.Header.Set(CorrelationHeader, id)
		}
		w.Header().Set(CorrelationHeader, id)
		next.ServeHTTP(w, r)
	})
}

// NewCorrelationID returns 16 random bytes in hex. An id must be unique,
// not secret: it comes from the runtime's per-thread generator, which
// needs no system call on the request path.
func NewCorrelationID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], mrand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], mrand.Uint64())
	return hex.EncodeToString(b[:])
}

// TokenFingerprint names a token in logs without revealing it: the first six
// hex digits of its SHA-256.
func TokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:3])
}

// RequireToken guards next with a bearer token compared in constant time.
// Paths in open (e.g. /health, /metrics) pass without one. An empty token
// disables the check: callers refuse that on non-loopback addresses.
func RequireToken(token string, open []string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range open {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		// The scheme name is case-insensitive (RFC 9110 §11.1).
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="llorch"`)
			WriteErrorFor(w, r, http.StatusUnauthorized, Error{Code: CodeUnauthorized, Message: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CheckExposure refuses to serve on a non-loopback address without a token:
// an open registry would let anyone on the network register fake nodes.
func CheckExposure(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("listen address %q is not loopback and no API token is set (LLORCH_API_TOKEN): refusing to start", addr)
}
