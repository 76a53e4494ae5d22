package simengine

// Load is what the engine's /metrics would report of its work, read
// without HTTP: an embedder that runs many simulated engines in one
// process (llorch loadtest's virtual node agents) exports it as a node
// agent would, without scraping each engine.
type Load struct {
	Slots      int // -np
	Processing int // requests holding a slot
	Deferred   int // requests waiting for one
	// Counters since start, as llamacpp:*_total.
	PromptTokens, PromptSeconds       float64
	PredictedTokens, PredictedSeconds float64
}

// Load returns the engine's current load and counters.
func (s *Server) Load() Load {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	return Load{
		Slots: s.cfg.Parallel, Processing: st.processing, Deferred: st.deferred,
		PromptTokens: st.promptTokens, PromptSeconds: st.promptSeconds,
		PredictedTokens: st.predictedTokens, PredictedSeconds: st.predictedSeconds,
	}
}
