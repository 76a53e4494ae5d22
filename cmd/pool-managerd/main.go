// Command pool-managerd is llorch's node agent, one per GPU machine.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "pool-managerd:", err)
		os.Exit(1)
	}
}
