package configtest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// recorder is a testing.TB that keeps the errors it is given.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatal(a ...any)            { r.TB.Fatal(a...) }

const doc = "# Tool\n\n" +
	"```sh\n# not a heading\n```\n\n" +
	"## tool\n\n" +
	"| flag | variable | default | meaning |\n|---|---|---|---|\n" +
	"| `--addr` | `TOOL_ADDR`, `TOOL_OLD_ADDR` | `127.0.0.1:1` | a `a|b` pipe in code |\n" +
	"| `--wait` | `TOOL_WAIT_MS` (ms) | 3s | |\n" +
	"| `--verbose` | `TOOL_VERBOSE` | false | |\n" +
	"| `--log-level`, `--log-format` | `TOOL_LOG_LEVEL`, `TOOL_LOG_FORMAT` | info, text | |\n" +
	"\nCommands:\n\n" +
	"- `tool run [-n N] [--dry]` — runs;\n  continued `--later`.\n" +
	"- `tool elsewhere …`\n\n" +
	"## next\n\n| flag | default |\n|---|---|\n| `--other` | 1 |\n"

func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:1", EnvVars: []string{"TOOL_ADDR", "TOOL_OLD_ADDR"}},
		&cli.DurationFlag{Name: "wait", Value: 3 * time.Second, EnvVars: []string{"TOOL_WAIT_MS"}},
		&cli.BoolFlag{Name: "verbose", EnvVars: []string{"TOOL_VERBOSE"}},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"TOOL_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"TOOL_LOG_FORMAT"}},
	}
}

func writeDoc(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFlagTable(t *testing.T) {
	rows, err := FlagTable(writeDoc(t), "tool")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || !slices.Equal(rows[0].EnvVars, []string{"TOOL_ADDR", "TOOL_OLD_ADDR"}) || rows[0].Default != "127.0.0.1:1" ||
		!slices.Equal(rows[3].Flags, []string{"--log-level", "--log-format"}) || rows[1].Line != 12 {
		t.Errorf("rows %+v", rows)
	}
	if _, err := FlagTable(writeDoc(t), "absent"); err == nil {
		t.Error("no error for a missing section")
	}
}

func TestCheckFlags(t *testing.T) {
	path := writeDoc(t)
	r := &recorder{TB: t}
	CheckFlags(r, flags(), path, "tool")
	if len(r.errs) != 0 {
		t.Fatalf("a matching table: %v", r.errs)
	}
	for _, tc := range []struct {
		name  string
		flags []cli.Flag
		want  string
	}{
		{"undocumented flag", append(flags(), &cli.IntFlag{Name: "new"}), "flag --new is not in the table"},
		{"undocumented variable", func() []cli.Flag {
			f := flags()
			f[1].(*cli.DurationFlag).EnvVars = append(f[1].(*cli.DurationFlag).EnvVars, "TOOL_WAIT")
			return f
		}(), "TOOL_WAIT is not in its row"},
		{"other default", func() []cli.Flag { f := flags(); f[1].(*cli.DurationFlag).Value = time.Second; return f }(), "--wait defaults to 1s"},
		{"documented flag that is gone", flags()[1:], "--addr is no flag of the command"},
		{"documented variable that is gone", func() []cli.Flag {
			f := flags()
			f[0].(*cli.StringFlag).EnvVars = f[0].(*cli.StringFlag).EnvVars[:1]
			return f
		}(), "TOOL_OLD_ADDR is not a variable of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			CheckFlags(r, tc.flags, path, "tool")
			if !slices.ContainsFunc(r.errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("errors %q, want one saying %q", r.errs, tc.want)
			}
		})
	}
	r = &recorder{TB: t}
	CheckFlags(r, []cli.Flag{&cli.IntFlag{Name: "other", Value: 1}}, path, "next")
	if len(r.errs) != 0 {
		t.Errorf("a table without a variable column: %v", r.errs)
	}
}

func TestCheckCommands(t *testing.T) {
	path := writeDoc(t)
	cmds := func() []*cli.Command {
		return []*cli.Command{
			{Name: "run", Flags: []cli.Flag{&cli.IntFlag{Name: "count", Aliases: []string{"n"}}, &cli.BoolFlag{Name: "dry"}, &cli.BoolFlag{Name: "later"}}},
			{Name: "elsewhere", Flags: []cli.Flag{&cli.BoolFlag{Name: "x"}}},
			{Name: "secret", Hidden: true},
		}
	}
	r := &recorder{TB: t}
	CheckCommands(r, "tool", cmds(), nil, path, "tool", FlagsElsewhere("elsewhere"))
	if len(r.errs) != 0 {
		t.Fatalf("matching bullets: %v", r.errs)
	}
	r = &recorder{TB: t}
	c := cmds()
	c[0].Flags = c[0].Flags[1:] // -n is gone
	c = append(c, &cli.Command{Name: "new"})
	CheckCommands(r, "tool", c, nil, path, "tool")
	for _, want := range []string{"shows -n, which is no flag of it", "no bullet for `tool new`", "does not show its flag --x"} {
		if !slices.ContainsFunc(r.errs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("errors %q, want one saying %q", r.errs, want)
		}
	}
}
