package simengine

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/llorch/llorch/sse"
)

// maxRequestBytes bounds a request body.
const maxRequestBytes = 8 << 20

// defaultSeed is what llama-server reports for "no seed" (random).
const defaultSeed = 4294967295

// completionBody is the part of a /completion or OpenAI body the
// simulator reads.
type completionBody struct {
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []chatMessage   `json:"messages"`
	NPredict            *int            `json:"n_predict"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	Seed                *int64          `json:"seed"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// parse decodes a request body into a task, writing llama-server's error
// on failure.
func (s *Server) parse(w http.ResponseWriter, r *http.Request, chat bool) (task, completionBody, bool) {
	var body completionBody
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err == nil && len(data) > maxRequestBytes {
		err = errors.New("request body too large")
	}
	if err == nil {
		err = json.Unmarshal(data, &body)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
		return task{}, body, false
	}
	t := task{nPredict: -1, seed: defaultSeed, stream: body.Stream}
	if chat {
		if len(body.Messages) == 0 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "'messages' is required", nil)
			return task{}, body, false
		}
		var b strings.Builder
		for _, m := range body.Messages {
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", m.Role, m.Content)
		}
		b.WriteString("<|im_start|>assistant\n")
		t.prompt = b.String()
	} else {
		t.prompt, err = promptText(body.Prompt)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
			return task{}, body, false
		}
	}
	for _, n := range []*int{body.NPredict, body.MaxTokens, body.MaxCompletionTokens} {
		if n != nil {
			t.nPredict = *n
			break
		}
	}
	if body.Seed != nil && *body.Seed >= 0 {
		t.seed = uint64(*body.Seed)
	} else if s.cfg.Seed != 0 {
		t.seed = s.cfg.Seed
	}
	t.promptTokens = len(tokenize(t.prompt))
	if t.promptTokens >= s.slotCtx {
		writeError(w, http.StatusBadRequest, "exceed_context_size_error",
			"the request exceeds the available context size, try increasing it",
			map[string]int{"n_prompt_tokens": t.promptTokens, "n_ctx": s.slotCtx})
		return task{}, body, false
	}
	return t, body, true
}

// promptText accepts a string or an array of strings/token ids.
func promptText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("'prompt' is required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []any
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("'prompt' must be a string or an array")
	}
	var b strings.Builder
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b.WriteString(v)
		case float64:
			fmt.Fprintf(&b, " t%d", int(v))
		default:
			return "", errors.New("'prompt' array items must be strings or token ids")
		}
	}
	return b.String(), nil
}

// streamChunk is a non-final /completion stream chunk.
type streamChunk struct {
	Index           int    `json:"index"`
	Content         string `json:"content"`
	Tokens          []int  `json:"tokens"`
	Stop            bool   `json:"stop"`
	IDSlot          int    `json:"id_slot"`
	TokensPredicted int    `json:"tokens_predicted"`
	TokensEvaluated int    `json:"tokens_evaluated"`
}

// finalChunk is the last /completion chunk (and the non-streamed answer).
type finalChunk struct {
	Index              int             `json:"index"`
	Content            string          `json:"content"`
	Tokens             []int           `json:"tokens"`
	IDSlot             int             `json:"id_slot"`
	Stop               bool            `json:"stop"`
	Model              string          `json:"model"`
	TokensPredicted    int             `json:"tokens_predicted"`
	TokensEvaluated    int             `json:"tokens_evaluated"`
	GenerationSettings json.RawMessage `json:"generation_settings"`
	Prompt             string          `json:"prompt"`
	HasNewLine         bool            `json:"has_new_line"`
	Truncated          bool            `json:"truncated"`
	StopType           string          `json:"stop_type"`
	StoppingWord       string          `json:"stopping_word"`
	TokensCached       int             `json:"tokens_cached"`
	Timings            timings         `json:"timings"`
}

func (s *Server) generationSettings(t task, stream bool) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(generationSettingsFmt, t.seed, t.nPredict, t.nPredict, stream))
}

func (s *Server) final(t task, res *result, content string) finalChunk {
	return finalChunk{
		Content: content, Tokens: []int{}, IDSlot: res.slot, Stop: true, Model: s.model,
		TokensPredicted: res.predicted, TokensEvaluated: t.promptTokens,
		GenerationSettings: s.generationSettings(t, t.stream),
		Prompt:             "<s> " + t.prompt, StopType: res.stopType,
		TokensCached: t.promptTokens + res.predicted - 1, Timings: res.timings,
	}
}

// completion serves llama-server's native POST /completion.
func (s *Server) completion(w http.ResponseWriter, r *http.Request) {
	t, _, ok := s.parse(w, r, false)
	if !ok {
		return
	}
	if !t.stream {
		res, err := s.run(r.Context(), t, func(int, string, int) error { return nil })
		if err != nil {
			return // client gone
		}
		body, _ := json.Marshal(s.final(t, res, res.content.String()))
		writeJSON(w, http.StatusOK, body)
		return
	}
	sw := startStream(w)
	res, err := s.run(r.Context(), t, func(id int, text string, n int) error {
		b, _ := json.Marshal(streamChunk{Content: text, Tokens: []int{id}, IDSlot: -1, TokensPredicted: n, TokensEvaluated: t.promptTokens})
		return sw.Event("", b)
	})
	if err != nil {
		return
	}
	b, _ := json.Marshal(s.final(t, res, ""))
	_ = sw.Event("", b)
}

// startStream sends the stream's headers at once, as llama-server does
// before the first token, so a client sees 200 while the task is deferred.
func startStream(w http.ResponseWriter) *sse.Writer {
	sw := sse.NewWriter(w)
	w.Header().Del("Cache-Control")
	w.Header().Del("X-Accel-Buffering")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return sw
}

type usage struct {
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokens        int `json:"prompt_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func makeUsage(t task, res *result) usage {
	return usage{CompletionTokens: res.predicted, PromptTokens: t.promptTokens, TotalTokens: t.promptTokens + res.predicted}
}

func finishReason(res *result) string {
	if res.stopType == "eos" {
		return "stop"
	}
	return "length"
}

// openAIID mimics llama-server's "chatcmpl-" + 32 random letters.
func openAIID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	var b [32]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "chatcmpl-" + string(b[:])
}

// chatCompletion serves POST /v1/chat/completions.
func (s *Server) chatCompletion(w http.ResponseWriter, r *http.Request) {
	t, _, ok := s.parse(w, r, true)
	if !ok {
		return
	}
	id, created := openAIID(), time.Now().Unix()
	if !t.stream {
		res, err := s.run(r.Context(), t, func(int, string, int) error { return nil })
		if err != nil {
			return
		}
		type message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		}
		type choice struct {
			FinishReason string  `json:"finish_reason"`
			Index        int     `json:"index"`
			Message      message `json:"message"`
		}
		body, _ := json.Marshal(struct {
			Choices           []choice `json:"choices"`
			Created           int64    `json:"created"`
			Model             string   `json:"model"`
			SystemFingerprint string   `json:"system_fingerprint"`
			Object            string   `json:"object"`
			Usage             usage    `json:"usage"`
			ID                string   `json:"id"`
			Timings           timings  `json:"timings"`
		}{[]choice{{finishReason(res), 0, message{"assistant", res.content.String()}}}, created, s.model, s.cfg.BuildInfo, "chat.completion", makeUsage(t, res), id, res.timings})
		writeJSON(w, http.StatusOK, body)
		return
	}
	type delta struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}
	type choice struct {
		FinishReason *string `json:"finish_reason"`
		Index        int     `json:"index"`
		Delta        any     `json:"delta"`
	}
	type chunk struct {
		Choices           []choice `json:"choices"`
		Created           int64    `json:"created"`
		ID                string   `json:"id"`
		Model             string   `json:"model"`
		SystemFingerprint string   `json:"system_fingerprint"`
		Object            string   `json:"object"`
		Usage             *usage   `json:"usage,omitempty"`
		Timings           *timings `json:"timings,omitempty"`
	}
	mk := func(c []choice) chunk {
		return chunk{Choices: c, Created: created, ID: id, Model: s.model, SystemFingerprint: s.cfg.BuildInfo, Object: "chat.completion.chunk"}
	}
	sw := startStream(w)
	first, _ := json.Marshal(mk([]choice{{Delta: json.RawMessage(`{"role":"assistant","content":null}`)}}))
	if sw.Event("", first) != nil {
		return
	}
	res, err := s.run(r.Context(), t, func(_ int, text string, _ int) error {
		b, _ := json.Marshal(mk([]choice{{Delta: delta{Content: &text}}}))
		return sw.Event("", b)
	})
	if err != nil {
		return
	}
	reason := finishReason(res)
	b, _ := json.Marshal(mk([]choice{{FinishReason: &reason, Delta: struct{}{}}}))
	_ = sw.Event("", b)
	u := makeUsage(t, res)
	last := mk([]choice{})
	last.Usage, last.Timings = &u, &res.timings
	b, _ = json.Marshal(last)
	_ = sw.Event("", b)
	_ = sw.Event("", []byte("[DONE]"))
}

// openAICompletion serves POST /v1/completions.
func (s *Server) openAICompletion(w http.ResponseWriter, r *http.Request) {
	t, _, ok := s.parse(w, r, false)
	if !ok {
		return
	}
	id, created := openAIID(), time.Now().Unix()
	type choice struct {
		Text         string  `json:"text"`
		Index        int     `json:"index"`
		Logprobs     *int    `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	}
	type body struct {
		Choices           []choice `json:"choices"`
		Created           int64    `json:"created"`
		Model             string   `json:"model"`
		SystemFingerprint string   `json:"system_fingerprint"`
		Object            string   `json:"object"`
		Usage             *usage   `json:"usage,omitempty"`
		ID                string   `json:"id"`
		Timings           *timings `json:"timings,omitempty"`
	}
	mk := func(c []choice) body {
		return body{Choices: c, Created: created, Model: s.model, SystemFingerprint: s.cfg.BuildInfo, Object: "text_completion", ID: id}
	}
	if !t.stream {
		res, err := s.run(r.Context(), t, func(int, string, int) error { return nil })
		if err != nil {
			return
		}
		reason := finishReason(res)
		out := mk([]choice{{Text: res.content.String(), FinishReason: &reason}})
		u := makeUsage(t, res)
		out.Usage, out.Timings = &u, &res.timings
		b, _ := json.Marshal(out)
		writeJSON(w, http.StatusOK, b)
		return
	}
	sw := startStream(w)
	res, err := s.run(r.Context(), t, func(_ int, text string, _ int) error {
		b, _ := json.Marshal(mk([]choice{{Text: text}}))
		return sw.Event("", b)
	})
	if err != nil {
		return
	}
	reason := finishReason(res)
	last := mk([]choice{{FinishReason: &reason}})
	u := makeUsage(t, res)
	last.Usage, last.Timings = &u, &res.timings
	b, _ := json.Marshal(last)
	_ = sw.Event("", b)
	_ = sw.Event("", []byte("[DONE]"))
}

func (s *Server) tokenizeRoute(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content string `json:"content"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
		return
	}
	toks := tokenize(body.Content)[1:] // no BOS, as llama-server's default
	b, _ := json.Marshal(struct {
		Tokens []int `json:"tokens"`
	}{toks})
	writeJSON(w, http.StatusOK, b)
}

// getSlots serves GET /slots (unless --no-slots).
func (s *Server) getSlots(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.NoSlots {
		// llama-server's message, which names the flag that turns it on.
		writeError(w, http.StatusNotImplemented, "not_supported_error", "This server does not support slots endpoint. Start it with `--slots`", nil)
		return
	}
	type nextToken struct {
		HasNextToken bool `json:"has_next_token"`
		HasNewLine   bool `json:"has_new_line"`
		NRemain      int  `json:"n_remain"`
		NDecoded     int  `json:"n_decoded"`
	}
	type slotJSON struct {
		ID                     int             `json:"id"`
		NCtx                   int             `json:"n_ctx"`
		Speculative            bool            `json:"speculative"`
		IsProcessing           bool            `json:"is_processing"`
		IDTask                 *int            `json:"id_task,omitempty"`
		NPromptTokens          *int            `json:"n_prompt_tokens,omitempty"`
		NPromptTokensProcessed *int            `json:"n_prompt_tokens_processed,omitempty"`
		NPromptTokensCache     *int            `json:"n_prompt_tokens_cache,omitempty"`
		Params                 json.RawMessage `json:"params,omitempty"`
		NextToken              []nextToken     `json:"next_token,omitempty"`
	}
	s.mu.Lock()
	out := make([]slotJSON, len(s.slots))
	for i, st := range s.slots {
		out[i] = slotJSON{ID: i, NCtx: s.slotCtx, IsProcessing: st.processing}
		if !st.hasTaskRecord {
			continue
		}
		task, prompt, zero := st.task, st.promptTokens, 0
		remain := -1
		if st.nPredict >= 0 {
			remain = st.nPredict - st.decoded
		}
		out[i].IDTask, out[i].NPromptTokens = &task, &prompt
		out[i].NPromptTokensProcessed, out[i].NPromptTokensCache = &zero, &zero
		out[i].Params = json.RawMessage(fmt.Sprintf(slotParamsFmt, st.seed, st.nPredict, st.nPredict, st.stream))
		out[i].NextToken = []nextToken{{HasNextToken: st.processing, NRemain: remain, NDecoded: st.decoded}}
	}
	s.mu.Unlock()
	b, _ := json.Marshal(out)
	writeJSON(w, http.StatusOK, b)
}

// metricsHelp lists llama-server's metrics in its order, with its HELP text.
var metricsHelp = []struct{ name, typ, help string }{
	{"prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens"},
	{"prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache"},
	{"prompt_seconds_total", "counter", "Total time spent processing prompts"},
	{"tokens_predicted_total", "counter", "Number of generation tokens processed"},
	{"tokens_predicted_seconds_total", "counter", "Total time spent generating tokens"},
	{"n_decode_total", "counter", "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding"},
	{"n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)"},
	{"spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated"},
	{"spec_decode_num_accepted_tokens_total", "counter", "Speculative: Total draft tokens accepted by the target model"},
	{"spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps"},
	{"prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s"},
	{"predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s"},
	{"requests_processing", "gauge", "Number of requests processing"},
	{"requests_deferred", "gauge", "Number of requests deferred"},
	{"n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call"},
}

// metrics serves GET /metrics (with --metrics) in llama-server's format.
// Like llama-server, the throughput gauges cover the time since the last
// scrape and reset with it.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	if !s.cfg.Metrics {
		writeError(w, http.StatusNotImplemented, "not_supported_error", "This server does not support metrics endpoint. Start it with `--metrics`", nil)
		return
	}
	s.mu.Lock()
	st := &s.stats
	rate := func(n, secs float64) float64 {
		if secs <= 0 {
			return 0
		}
		return math.Round(n/secs*100) / 100
	}
	busy := 0.0
	if st.busySlotDecodes > 0 {
		busy = st.busySlotSamples / st.busySlotDecodes
	}
	values := map[string]float64{
		"prompt_tokens_total":            st.promptTokens,
		"prompt_seconds_total":           st.promptSeconds,
		"tokens_predicted_total":         st.predictedTokens,
		"tokens_predicted_seconds_total": st.predictedSeconds,
		"n_decode_total":                 st.decodes,
		"n_tokens_max":                   st.nTokensMax,
		"prompt_tokens_seconds":          rate(st.windowPrompt, st.windowPromptS),
		"predicted_tokens_seconds":       rate(st.windowPredicted, st.windowPredictedS),
		"requests_processing":            float64(st.processing),
		"requests_deferred":              float64(st.deferred),
		"n_busy_slots_per_decode":        busy,
	}
	st.windowPrompt, st.windowPromptS, st.windowPredicted, st.windowPredictedS = 0, 0, 0, 0
	s.mu.Unlock()
	var b strings.Builder
	for _, m := range metricsHelp {
		fmt.Fprintf(&b, "# HELP llamacpp:%s %s\n# TYPE llamacpp:%s %s\nllamacpp:%s %s\n",
			m.name, m.help, m.name, m.typ, m.name, formatValue(values[m.name]))
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, b.String())
}

// formatValue writes numbers as llama-server does: integers bare, others
// with up to six decimals.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.6f", v), "0"), ".")
}

// props serves GET /props.
func (s *Server) props(w http.ResponseWriter, _ *http.Request) {
	type modalities struct {
		Vision bool `json:"vision"`
		Video  bool `json:"video"`
		Audio  bool `json:"audio"`
	}
	type caps struct {
		SupportsObjectArguments   bool `json:"supports_object_arguments"`
		SupportsParallelToolCalls bool `json:"supports_parallel_tool_calls"`
		SupportsPreserveReasoning bool `json:"supports_preserve_reasoning"`
		SupportsReasoningEffort   bool `json:"supports_reasoning_effort"`
		SupportsStringContent     bool `json:"supports_string_content"`
		SupportsSystemRole        bool `json:"supports_system_role"`
		SupportsToolCalls         bool `json:"supports_tool_calls"`
		SupportsTools             bool `json:"supports_tools"`
		SupportsTypedContent      bool `json:"supports_typed_content"`
	}
	type genSettings struct {
		Params json.RawMessage `json:"params"`
		NCtx   int             `json:"n_ctx"`
	}
	b, _ := json.Marshal(struct {
		DefaultGenerationSettings genSettings `json:"default_generation_settings"`
		TotalSlots                int         `json:"total_slots"`
		ModelAlias                string      `json:"model_alias"`
		ModelFtype                string      `json:"model_ftype"`
		ModelPath                 string      `json:"model_path"`
		Modalities                modalities  `json:"modalities"`
		MediaMarker               string      `json:"media_marker"`
		EndpointSlots             bool        `json:"endpoint_slots"`
		EndpointProps             bool        `json:"endpoint_props"`
		EndpointMetrics           bool        `json:"endpoint_metrics"`
		UI                        bool        `json:"ui"`
		UISettings                struct{}    `json:"ui_settings"`
		ChatTemplate              string      `json:"chat_template"`
		ChatTemplateCaps          caps        `json:"chat_template_caps"`
		BOSToken                  string      `json:"bos_token"`
		EOSToken                  string      `json:"eos_token"`
		BuildInfo                 string      `json:"build_info"`
		IsSleeping                bool        `json:"is_sleeping"`
		CORSProxyEnabled          bool        `json:"cors_proxy_enabled"`
	}{
		DefaultGenerationSettings: genSettings{json.RawMessage(propsParams), s.slotCtx},
		TotalSlots:                s.cfg.Parallel, ModelAlias: s.model, ModelFtype: "simulated",
		ModelPath: s.cfg.Model, MediaMarker: "<__media__>", EndpointSlots: !s.cfg.NoSlots,
		EndpointMetrics: s.cfg.Metrics, UI: false, ChatTemplate: chatTemplate,
		ChatTemplateCaps: caps{SupportsStringContent: true, SupportsSystemRole: true},
		BOSToken:         "<s>", EOSToken: "</s>", BuildInfo: s.cfg.BuildInfo,
	})
	writeJSON(w, http.StatusOK, b)
}

// models serves GET /v1/models.
func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	m, _ := json.Marshal(s.model)
	body := fmt.Sprintf(`{"models":[{"name":%[1]s,"model":%[1]s,"modified_at":"","size":"","digest":"","type":"model","description":"","tags":[""],"capabilities":["completion"],"parameters":"","details":{"parent_model":"","format":"gguf","family":"","families":[""],"parameter_size":"","quantization_level":""}}],"object":"list","data":[{"id":%[1]s,"aliases":[%[1]s],"tags":[],"object":"model","created":%[2]d,"owned_by":"llamacpp","meta":{"vocab_type":1,"n_vocab":%[3]d,"n_ctx":%[4]d,"n_ctx_train":%[5]d,"n_embd":64,"n_params":292800,"size":1171200,"ftype":"simulated"}}]}`,
		m, s.start.Unix(), len(words)+256, s.slotCtx, s.cfg.CtxSize)
	writeJSON(w, http.StatusOK, []byte(body))
}
