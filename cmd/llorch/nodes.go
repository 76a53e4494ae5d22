package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/api"
)

func nodesCommand() *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "list the fleet's nodes (GET /v2/nodes)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include offline nodes"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
		},
		Action: func(c *cli.Context) error {
			out := c.String("output")
			if out != "table" && out != "json" {
				return fmt.Errorf("--output %q: want table or json", out)
			}
			list, err := clientFrom(c).Nodes(c.Context, c.Bool("all"))
			if err != nil {
				return err
			}
			if out == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			return printNodes(c.App.Writer, list.Nodes)
		},
	}
}

// printNodes writes the fleet as a table: pools as ready/total, slots as
// free/total over ready pools.
func printNodes(w io.Writer, nodes []api.NodeInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATUS\tHEARTBEAT\tPOOLS\tSLOTS\tADDRESS")
	for _, n := range nodes {
		ready, free, total := 0, 0, 0
		for _, p := range n.Pools {
			if p.Ready {
				ready++
				free += p.SlotsFree
				total += p.SlotsTotal
			}
		}
		age := (time.Duration(n.HeartbeatAgeMS) * time.Millisecond).Round(100 * time.Millisecond)
		fmt.Fprintf(tw, "%s\t%s\t%s ago\t%d/%d ready\t%d/%d free\t%s\n",
			n.NodeID, n.Status, age, ready, len(n.Pools), free, total, n.Address)
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(no nodes)")
	}
	return tw.Flush()
}
