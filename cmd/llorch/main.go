// Command llorch is llorch's command-line client.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "llorch:", withHint(err))
		os.Exit(1)
	}
}
