package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/llorch/llorch/api"
	"github.com/llorch/llorch/sse"
)

func submitCommand() *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "run a task and stream its tokens to stdout (POST /v2/tasks, then its events)",
		ArgsUsage: "PROMPT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "model_ref: pools serving this model (default: any)"},
			&cli.IntFlag{Name: "max-tokens", Aliases: []string{"n"}, Value: 64, Usage: "tokens to generate"},
			&cli.StringFlag{Name: "priority", Value: "interactive", Usage: "interactive or batch"},
			&cli.StringFlag{Name: "session", Usage: "session id (the same pool serves a session's tasks when it can)"},
			&cli.StringFlag{Name: "pin", Usage: "run on this pool id only"},
			&cli.StringFlag{Name: "node", Usage: "run on this node only"},
			&cli.BoolFlag{Name: "events", Usage: "print every event as JSON lines instead of the text"},
		},
		Action: func(c *cli.Context) error {
			prompt := strings.Join(c.Args().Slice(), " ")
			if prompt == "" {
				return errors.New("submit: a PROMPT is required")
			}
			req := api.TaskRequest{Prompt: prompt, ModelRef: c.String("model"), MaxTokens: c.Int("max-tokens"),
				Priority: c.String("priority"), SessionID: c.String("session")}
			if c.String("pin") != "" || c.String("node") != "" {
				req.Placement = &api.TaskPlacement{NodeID: c.String("node")}
				if c.String("pin") != "" {
					req.Placement.Mode, req.Placement.PinPoolID = "pin", c.String("pin")
				}
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
			defer stop()
			client := clientFrom(c)
			// The event stream is long-lived: no overall timeout.
			client.HTTP = &http.Client{}
			accepted, err := client.SubmitTask(ctx, req)
			if err != nil {
				return err
			}
			return followTask(ctx, client, accepted.TaskID, c.App.Writer, c.App.ErrWriter, c.Bool("events"))
		},
	}
}

// followTask prints a task's tokens (or every event) until it ends; an
// interrupt cancels the task.
func followTask(ctx context.Context, client *api.Client, id string, out, errOut io.Writer, events bool) error {
	body, err := client.TaskEvents(ctx, id)
	if err != nil {
		return err
	}
	defer body.Close()
	r := sse.NewReader(body)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
			if ctx.Err() != nil {
				return fmt.Errorf("task %s: interrupted (its stream was closed, which cancels it)", id)
			}
			return fmt.Errorf("task %s: stream ended without end or error", id)
		}
		if err != nil {
			return err
		}
		if ev.IsComment {
			continue
		}
		if events {
			fmt.Fprintf(out, "{\"event\":%q,\"data\":%s}\n", ev.Type, ev.Data)
		}
		switch ev.Type {
		case "token":
			if !events {
				var tok struct {
					T string `json:"t"`
				}
				if json.Unmarshal([]byte(ev.Data), &tok) == nil {
					fmt.Fprint(out, tok.T)
				}
			}
		case "started":
			var st struct {
				NodeID string `json:"node_id"`
				PoolID string `json:"pool_id"`
			}
			if json.Unmarshal([]byte(ev.Data), &st) == nil && !events {
				fmt.Fprintf(errOut, "task %s on %s/%s\n", id, st.NodeID, st.PoolID)
			}
		case "end":
			if !events {
				fmt.Fprintln(out)
			}
			return nil
		case "error":
			var e api.Error
			_ = json.Unmarshal([]byte(ev.Data), &e)
			return fmt.Errorf("task %s: %s: %s", id, e.Code, e.Message)
		}
	}
}

// msText prints milliseconds for a table: "0ms", "12ms", "1.25s".
func msText(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.2fs", ms/1000)
	}
	return fmt.Sprintf("%.0fms", ms)
}

func explainCommand() *cli.Command {
	return &cli.Command{
		Name:  "explain",
		Usage: "how placement ranks the fleet now (GET /v2/placement/explain)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "model to place"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
		},
		Action: func(c *cli.Context) error {
			ex, err := clientFrom(c).Explain(c.Context, c.String("model"))
			if err != nil {
				return err
			}
			if c.String("output") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			return printExplanation(c.App.Writer, ex)
		},
	}
}

// printExplanation writes the ranking — each pool's expected wait, time to
// first token and latency, the speed they were predicted from, then one
// column per score component (weighted) — and the rejected pools and why.
func printExplanation(w io.Writer, ex api.Explanation) error {
	names := make([]string, 0, len(ex.Scorers))
	for n := range ex.Scorers {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "RANK\tNODE/POOL\tTOTAL\tFREE\tWAIT\tTTFT\tLATENCY\tSPEED\t%s\n", strings.ToUpper(strings.Join(names, "\t")))
	for _, c := range ex.Candidates {
		e := c.Expected
		speed := e.SpeedSource
		if e.DecodeTPS > 0 {
			speed = fmt.Sprintf("%.0f tok/s (%s, %d tasks)", e.DecodeTPS, e.SpeedSource, e.Samples)
		}
		pool := c.NodeID + "/" + c.PoolID
		if c.ReplicaID != "" {
			pool += "/" + c.ReplicaID
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s", c.Rank, pool, c.Total, c.FreeSlots,
			msText(e.WaitMS), msText(e.TTFTMS), msText(e.LatencyMS), speed)
		for _, n := range names {
			fmt.Fprintf(tw, "\t%d", c.Components[n])
		}
		fmt.Fprintln(tw)
	}
	if len(ex.Candidates) == 0 {
		fmt.Fprintln(tw, "(no pool can take a task now)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(ex.Rejected) > 0 {
		fmt.Fprintln(w, "\nrejected:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, r := range ex.Rejected {
			fmt.Fprintf(tw, "  %s/%s\t%s\t%s\n", r.NodeID, r.PoolID, r.Filter, r.Reason)
		}
		return tw.Flush()
	}
	return nil
}
