// Command orchestratord is llorch's control plane.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "orchestratord:", err)
		os.Exit(1)
	}
}
