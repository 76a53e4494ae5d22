// Command generate writes llorch's Grafana dashboards (package dashboards)
// as JSON files: `go run ./dashboards/generate` (make dashboards) from the
// repository root writes them into dashboards/.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/llorch/llorch/dashboards"
)

func main() {
	dir := flag.String("out", "dashboards", "directory to write the dashboards' JSON files into")
	flag.Parse()
	if err := dashboards.Write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}
