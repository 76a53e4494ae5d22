// Package configtest checks that a command's flags and its documentation
// agree, so that docs/configuration.md cannot drift from the binaries:
// CheckFlags compares a command's flags with a Markdown table of flags
// (flag, variable, default), CheckCommands a command's subcommands with
// the bullets that document them. Each takes the heading of the document
// section that holds the table or the bullets. It has no state.
package configtest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// Row is one row of a flag table.
type Row struct {
	Line    int      // 1-based line in the document
	Flags   []string // as written: "--addr", "-np"
	EnvVars []string
	Default string // the default cell, backticks removed; "" without one
}

var (
	flagRE = regexp.MustCompile("`(--?[a-z][a-z0-9-]*)")
	envRE  = regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
)

// Section returns the lines of the Markdown file at path under the
// heading whose text is section (any level), up to the next heading of the
// same or a higher level, and the line number of the first.
func Section(path, section string) (lines []string, first int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	all := strings.Split(string(b), "\n")
	level := 0
	fenced := false
	for i, l := range all {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
		}
		h := strings.TrimLeft(l, "#")
		depth := len(l) - len(h)
		if fenced || depth == 0 || !strings.HasPrefix(h, " ") {
			if level > 0 {
				lines = append(lines, l)
			}
			continue
		}
		if level > 0 && depth <= level {
			break
		}
		if level == 0 && strings.TrimSpace(h) == section {
			level, first = depth, i+2
			continue
		}
		if level > 0 {
			lines = append(lines, l)
		}
	}
	if level == 0 {
		return nil, 0, fmt.Errorf("%s: no section %q", path, section)
	}
	return lines, first, nil
}

// FlagTable reads the first table of section in the Markdown file at
// path. Its header names the columns: "flag", "variable" (or "env") and
// "default"; only "flag" is required.
func FlagTable(path, section string) ([]Row, error) {
	lines, first, err := Section(path, section)
	if err != nil {
		return nil, err
	}
	var rows []Row
	cols := map[string]int{}
	for i, l := range lines {
		if !strings.HasPrefix(strings.TrimSpace(l), "|") {
			if len(cols) > 0 {
				break // the table ended
			}
			continue
		}
		cells := splitRow(l)
		switch {
		case len(cols) == 0:
			for j, c := range cells {
				switch strings.ToLower(strings.TrimSpace(c)) {
				case "flag":
					cols["flag"] = j
				case "variable", "env":
					cols["env"] = j
				case "default":
					cols["default"] = j
				}
			}
			if _, ok := cols["flag"]; !ok {
				return nil, fmt.Errorf("%s:%d: a table without a flag column", path, first+i)
			}
		case strings.Trim(strings.TrimSpace(l), "|-: ") == "":
			// the separator row
		default:
			rows = append(rows, parseRow(cells, cols, first+i))
		}
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: section %q has no flag table", path, section)
	}
	return rows, nil
}

func parseRow(cells []string, cols map[string]int, line int) Row {
	cell := func(name string) string {
		if j, ok := cols[name]; ok && j < len(cells) {
			return cells[j]
		}
		return ""
	}
	r := Row{Line: line, Default: strings.TrimSpace(strings.ReplaceAll(cell("default"), "`", ""))}
	for _, m := range flagRE.FindAllStringSubmatch(cell("flag"), -1) {
		r.Flags = append(r.Flags, m[1])
	}
	for _, m := range envRE.FindAllStringSubmatch(cell("env"), -1) {
		r.EnvVars = append(r.EnvVars, m[1])
	}
	return r
}

// splitRow splits a table row into its cells; a | inside backticks is
// text.
func splitRow(l string) []string {
	l = strings.TrimSpace(l)
	l = strings.TrimPrefix(strings.TrimSuffix(l, "|"), "|")
	var cells []string
	var cur strings.Builder
	code := false
	for _, r := range l {
		switch {
		case r == '`':
			code = !code
		case r == '|' && !code:
			cells = append(cells, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(cells, cur.String())
}

// Option adjusts a check.
type Option func(*options)

type options struct {
	skipDefaults map[string]bool
	elsewhere    map[string]bool
}

// SkipDefault leaves out the default check of the named flags, for a
// default the table describes in words ("3 polls").
func SkipDefault(names ...string) Option {
	return func(o *options) {
		for _, n := range names {
			o.skipDefaults[n] = true
		}
	}
}

// FlagsElsewhere names commands whose flags another section documents
// (check them there with CheckFlags); CheckCommands then checks only that
// they are listed.
func FlagsElsewhere(commands ...string) Option {
	return func(o *options) {
		for _, n := range commands {
			o.elsewhere[n] = true
		}
	}
}

func apply(opts []Option) options {
	o := options{skipDefaults: map[string]bool{}, elsewhere: map[string]bool{}}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// dashed spells a flag's name as on the command line.
func dashed(name string) string { return "--" + name }

// spellings are every way the documentation may write flag f: its name
// and aliases, with one dash or two.
func spellings(f cli.Flag) []string {
	var out []string
	for _, n := range f.Names() {
		out = append(out, "-"+n, "--"+n)
	}
	return out
}

// CheckFlags fails t unless flags and the flag table of section in the
// Markdown file at path agree: every flag has a row (by its name or an
// alias); each of its variables is in that row; its default, where it has
// one (not false, not empty), is in the row's default cell; and every
// flag and variable of the table belongs to a flag of flags.
func CheckFlags(t testing.TB, flags []cli.Flag, path, section string, opts ...Option) {
	t.Helper()
	o := apply(opts)
	rows, err := FlagTable(path, section)
	if err != nil {
		t.Fatal(err)
	}
	byFlag := map[string]*Row{}
	for i := range rows {
		for _, f := range rows[i].Flags {
			byFlag[f] = &rows[i]
		}
	}
	known := map[string]cli.Flag{}
	for _, f := range flags {
		var row *Row
		for _, s := range spellings(f) {
			known[s] = f
			if r := byFlag[s]; r != nil && row == nil {
				row = r
			}
		}
		name := dashed(f.Names()[0])
		if row == nil {
			t.Errorf("%s, section %q: flag %s is not in the table", path, section, name)
			continue
		}
		checkRow(t, f, name, row, path, o)
	}
	for _, r := range rows {
		var owners []cli.Flag
		for _, f := range r.Flags {
			if k, ok := known[f]; ok {
				owners = append(owners, k)
			} else {
				t.Errorf("%s:%d: %s is no flag of the command", path, r.Line, f)
			}
		}
		for _, env := range r.EnvVars {
			if !slices.ContainsFunc(owners, func(f cli.Flag) bool { return slices.Contains(envVars(f), env) }) {
				t.Errorf("%s:%d: %s is not a variable of %v", path, r.Line, env, r.Flags)
			}
		}
	}
}

func envVars(f cli.Flag) []string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.GetEnvVars()
	}
	return nil
}

func checkRow(t testing.TB, f cli.Flag, name string, row *Row, path string, o options) {
	t.Helper()
	for _, env := range envVars(f) {
		if !slices.Contains(row.EnvVars, env) {
			t.Errorf("%s:%d: %s's variable %s is not in its row (%v)", path, row.Line, name, env, row.EnvVars)
		}
	}
	d, ok := f.(cli.DocGenerationFlag)
	if !ok || o.skipDefaults[f.Names()[0]] {
		return
	}
	def := strings.Trim(d.GetDefaultText(), `"`)
	if _, isBool := f.(*cli.BoolFlag); isBool || def == "" {
		return
	}
	if !strings.Contains(row.Default, def) {
		t.Errorf("%s:%d: %s defaults to %s, the table says %q", path, row.Line, name, def, row.Default)
	}
}

// CheckCommands fails t unless cmds and the bullets of section in the
// Markdown file at path agree: every command (but help and hidden ones)
// has a bullet starting "- `PROGRAM NAME", every such bullet names a
// command, and a command's bullet shows each of its flags (by name or
// alias) and no flag that is neither the command's nor in globals.
func CheckCommands(t testing.TB, program string, cmds []*cli.Command, globals []cli.Flag, path, section string, opts ...Option) {
	t.Helper()
	o := apply(opts)
	lines, first, err := Section(path, section)
	if err != nil {
		t.Fatal(err)
	}
	bullets, at := commandBullets(lines, program)
	byName := map[string]*cli.Command{}
	for _, c := range cmds {
		if c.Hidden || c.Name == "help" {
			continue
		}
		byName[c.Name] = c
		text, ok := bullets[c.Name]
		if !ok {
			t.Errorf("%s, section %q: no bullet for `%s %s`", path, section, program, c.Name)
			continue
		}
		if o.elsewhere[c.Name] {
			continue
		}
		checkBullet(t, c, globals, text, fmt.Sprintf("%s:%d", path, first+at[c.Name]))
	}
	for name := range bullets {
		if byName[name] == nil {
			t.Errorf("%s:%d: `%s %s` is no command", path, first+at[name], program, name)
		}
	}
}

// commandBullets maps each command a bullet documents to its text (the
// bullet with its continuation lines) and its line in lines.
func commandBullets(lines []string, program string) (map[string]string, map[string]int) {
	re := regexp.MustCompile("^- `" + regexp.QuoteMeta(program) + " ([a-z][a-z0-9-]*)")
	text, at := map[string]string{}, map[string]int{}
	cur := ""
	for i, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			cur = m[1]
			text[cur], at[cur] = l, i
			continue
		}
		if cur == "" || strings.HasPrefix(l, "- ") || strings.TrimSpace(l) == "" {
			cur = ""
			continue
		}
		text[cur] += "\n" + l
	}
	return text, at
}

var bulletFlagRE = regexp.MustCompile(`(?:^|[\s\[(` + "`" + `])(--?[a-z][a-z0-9-]*)`)

func checkBullet(t testing.TB, c *cli.Command, globals []cli.Flag, text, where string) {
	t.Helper()
	mentioned := map[string]bool{}
	for _, m := range bulletFlagRE.FindAllStringSubmatch(text, -1) {
		mentioned[m[1]] = true
	}
	own := map[string]bool{}
	for _, f := range c.Flags {
		shown := false
		for _, s := range spellings(f) {
			own[s] = true
			shown = shown || mentioned[s]
		}
		if !shown {
			t.Errorf("%s: the bullet of %s does not show its flag %s", where, c.Name, dashed(f.Names()[0]))
		}
	}
	for _, f := range globals {
		for _, s := range spellings(f) {
			own[s] = true
		}
	}
	for m := range mentioned {
		if !own[m] {
			t.Errorf("%s: the bullet of %s shows %s, which is no flag of it", where, c.Name, m)
		}
	}
}
