// Command llorch is llorch's command-line client.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "llorch:", err)
		os.Exit(1)
	}
}
