package main

import (
	"testing"

	"github.com/llorch/llorch/config/configtest"
)

// llorch's global flags, its commands and their flags are the ones
// docs/configuration.md shows; sim-engine's flags are in docs/engines.md, loadtest's in docs/loadtest.md.
func TestFlagsAreDocumented(t *testing.T) {
	app := newApp()
	configtest.CheckFlags(t, app.Flags, "../../docs/configuration.md", "llorch")
	configtest.CheckCommands(t, "llorch", app.Commands, app.Flags, "../../docs/configuration.md", "llorch",
		configtest.FlagsElsewhere("sim-engine", "loadtest"))
	configtest.CheckFlags(t, loadtestCommand().Flags, "../../docs/loadtest.md", "Load, faults and invariants: `llorch loadtest`")
	configtest.CheckFlags(t, simEngineCommand().Flags, "../../docs/engines.md", "The simulator: `llorch sim-engine`")
}
