package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/llorch/llorch/config/configtest"
)

// Every flag and variable of orchestratord is in docs/configuration.md's
// orchestratord table with its default, and the table lists nothing else.
func TestFlagsAreDocumented(t *testing.T) {
	configtest.CheckFlags(t, newApp().Flags, "../../docs/configuration.md", "orchestratord")
}

// The control plane does not link NVML: the GPU library is the node
// agent's (exporter), and nothing the control plane imports may pull it
// in.
func TestNoNVML(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/llorch/llorch/cmd/orchestratord").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/NVIDIA/go-nvml") || pkg == "github.com/llorch/llorch/exporter" {
			t.Errorf("orchestratord depends on %s", pkg)
		}
	}
}
