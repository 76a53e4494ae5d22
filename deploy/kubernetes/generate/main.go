// Command generate writes the generated Kubernetes manifests of
// deploy/kubernetes — a PrometheusRule per alerts/*.yml file and a
// ConfigMap per dashboards/*.json file — from the repository root:
// `go run ./deploy/kubernetes/generate` (make kubernetes).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/llorch/llorch/deploy/kubernetes"
)

func main() {
	root := flag.String("root", ".", "the repository root (holds alerts/ and dashboards/)")
	out := flag.String("out", "deploy/kubernetes", "directory to write the generated manifests into")
	flag.Parse()
	if err := kubernetes.Write(*root, *out); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}
