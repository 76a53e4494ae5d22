package engine_test

import (
	"testing"

	"github.com/llorch/llorch/engine"
)

// The end of every recorded answer yields llama-server's timings, as a
// proxy that kept the last 1.5 KiB of it would see them.
func TestLastTimings(t *testing.T) {
	for _, tc := range []struct {
		recording             string
		predictedN, promptN   int
		predictedMS, promptMS float64
	}{
		{"chat_stream.txt", 8, 1, 1.546, 0.252},
		{"chat_nostream.txt", 16, 50, 2.663, 2.411},
		{"v1_completions.txt", 8, 1, 0.907, 0.184},
	} {
		t.Run(tc.recording, func(t *testing.T) {
			body := loadRecording(t, tc.recording).body
			tail := body[max(0, len(body)-1536):]
			tm, ok := engine.LastTimings(tail)
			if !ok || tm.PredictedN != tc.predictedN || tm.PromptN != tc.promptN || tm.PredictedMS != tc.predictedMS || tm.PromptMS != tc.promptMS {
				t.Errorf("LastTimings = %+v, %v", tm, ok)
			}
		})
	}
	for name, tail := range map[string]string{
		"none":          `data: {"choices":[]}` + "\n\ndata: [DONE]\n\n",
		"cut":           `"timings":{"predicted_n":8,"predicted_ms":1.5`,
		"not an object": `"timings":[1,2]`,
	} {
		if tm, ok := engine.LastTimings([]byte(tail)); ok {
			t.Errorf("%s: timings %+v from %q", name, tm, tail)
		}
	}
}
