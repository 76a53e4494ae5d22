package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/llorch/llorch/sse"
)

// CompletionRequest is the body of POST /completion, the fields llorch sets.
type CompletionRequest struct {
	Prompt      string   `json:"prompt"`
	NPredict    int      `json:"n_predict,omitempty"`
	Stream      bool     `json:"stream"`
	Seed        *int64   `json:"seed,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	IDSlot      *int     `json:"id_slot,omitempty"`
	CachePrompt *bool    `json:"cache_prompt,omitempty"`
}

// CompletionChunk is one streamed chunk of POST /completion; the last has
// Stop set and carries Timings.
type CompletionChunk struct {
	Index           int      `json:"index"`
	Content         string   `json:"content"`
	Tokens          []int    `json:"tokens"`
	Stop            bool     `json:"stop"`
	IDSlot          int      `json:"id_slot"`
	TokensPredicted int      `json:"tokens_predicted"`
	TokensEvaluated int      `json:"tokens_evaluated"`
	Model           string   `json:"model,omitempty"`
	StopType        string   `json:"stop_type,omitempty"`
	Timings         *Timings `json:"timings,omitempty"`
}

// Timings is llama-server's per-request timing report.
type Timings struct {
	CacheN              int     `json:"cache_n"`
	PromptN             int     `json:"prompt_n"`
	PromptMS            float64 `json:"prompt_ms"`
	PromptPerTokenMS    float64 `json:"prompt_per_token_ms"`
	PromptPerSecond     float64 `json:"prompt_per_second"`
	PredictedN          int     `json:"predicted_n"`
	PredictedMS         float64 `json:"predicted_ms"`
	PredictedPerTokenMS float64 `json:"predicted_per_token_ms"`
	PredictedPerSecond  float64 `json:"predicted_per_second"`
}

// ErrStreamTruncated means the engine's stream ended before its final chunk:
// the engine died or the connection broke mid-task.
var ErrStreamTruncated = errors.New("engine stream ended before its final chunk")

// Complete streams POST /completion, calling onChunk for each chunk and
// returning the final one. Cancelling ctx closes the upstream request, which
// makes llama-server cancel the task and free its slot. A comment ping is
// passed to onPing when it is not nil.
func (c *Client) Complete(ctx context.Context, req CompletionRequest, onChunk func(CompletionChunk) error, onPing func(string) error) (CompletionChunk, error) {
	req.Stream = true
	resp, err := c.do(ctx, http.MethodPost, "/completion", req, true)
	if err != nil {
		return CompletionChunk{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return CompletionChunk{}, decodeError(resp)
	}
	defer resp.Body.Close()
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		switch {
		case errors.Is(err, io.EOF):
			return CompletionChunk{}, ErrStreamTruncated
		case err != nil:
			if ctx.Err() != nil {
				return CompletionChunk{}, ctx.Err()
			}
			return CompletionChunk{}, fmt.Errorf("%w: %w", ErrStreamTruncated, err)
		case ev.IsComment:
			if onPing != nil {
				if err := onPing(ev.Comment); err != nil {
					return CompletionChunk{}, err
				}
			}
			continue
		}
		// An error object decodes into a chunk without complaint, so look
		// for one in the same pass.
		var msg struct {
			CompletionChunk
			Error *errorDetail `json:"error"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &msg); err != nil {
			return CompletionChunk{}, fmt.Errorf("engine chunk: %w", err)
		}
		if msg.Error != nil {
			return CompletionChunk{}, msg.Error.statusError()
		}
		chunk := msg.CompletionChunk
		if chunk.Stop {
			return chunk, nil
		}
		if err := onChunk(chunk); err != nil {
			return CompletionChunk{}, err
		}
	}
}

// errorDetail is an error llama-server sends inside a stream once it has
// answered 200 (`data: {"error":{...}}`).
type errorDetail struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

func (e *errorDetail) statusError() error {
	return &StatusError{StatusCode: e.Code, Type: e.Type, Message: e.Message}
}

// ChatChunk is one chunk of an OpenAI chat completion stream.
type ChatChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		FinishReason *string `json:"finish_reason"`
		Delta        struct {
			Role    string  `json:"role,omitempty"`
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
		PromptTokens     int `json:"prompt_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage,omitempty"`
	Timings *Timings `json:"timings,omitempty"`
}

// ChatStream streams POST /v1/chat/completions with the given OpenAI body
// (its "stream" is forced on), calling onChunk with each chunk's raw JSON
// and decoded form, until "data: [DONE]".
func (c *Client) ChatStream(ctx context.Context, body map[string]any, onChunk func(raw []byte, chunk ChatChunk) error) error {
	b := make(map[string]any, len(body)+1)
	for k, v := range body {
		b[k] = v
	}
	b["stream"] = true
	resp, err := c.do(ctx, http.MethodPost, "/v1/chat/completions", b, true)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	defer resp.Body.Close()
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		switch {
		case errors.Is(err, io.EOF):
			return ErrStreamTruncated
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %w", ErrStreamTruncated, err)
		case ev.IsComment:
			continue
		case ev.Data == "[DONE]":
			return nil
		}
		var msg struct {
			ChatChunk
			Error *errorDetail `json:"error"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &msg); err != nil {
			return fmt.Errorf("engine chunk: %w", err)
		}
		if msg.Error != nil {
			return msg.Error.statusError()
		}
		if err := onChunk([]byte(ev.Data), msg.ChatChunk); err != nil {
			return err
		}
	}
}

// timingsKey starts llama-server's timings object, which ends every
// answer: the last chunk of a stream, the end of a non-streamed body.
var timingsKey = []byte(`"timings":`)

// LastTimings finds the last timings object in tail, the end of an
// engine's answer as a proxy passed it through. ok is false when there is
// none, or it was cut.
func LastTimings(tail []byte) (t Timings, ok bool) {
	i := bytes.LastIndex(tail, timingsKey)
	if i < 0 {
		return Timings{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(tail[i+len(timingsKey):]))
	if err := dec.Decode(&t); err != nil {
		return Timings{}, false
	}
	return t, true
}
