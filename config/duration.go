package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Duration is a flag value that takes a Go duration ("30s", "1500ms") or a
// bare number in BareUnit, so the legacy variables such as
// ORCHESTRATORD_NODE_TIMEOUT_MS=30000 keep working beside --node-timeout=30s.
type Duration struct {
	D        time.Duration
	BareUnit time.Duration
	// Names is what errors call the setting, e.g.
	// "--node-timeout/ORCHESTRATORD_NODE_TIMEOUT_MS" (DurationFlag sets
	// it): a bad value is reported with the flag and the variable whichever
	// of them carried it.
	Names string
}

var _ cli.Generic = (*Duration)(nil)

// Set parses s.
func (d *Duration) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n <= 0 {
			return d.errorf("%s: must be positive", s)
		}
		d.D = time.Duration(n * float64(d.BareUnit))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return d.errorf("want a duration such as 30s or a number of %s", unitName(d.BareUnit))
	}
	if v <= 0 {
		return d.errorf("%s: must be positive", s)
	}
	d.D = v
	return nil
}

func (d *Duration) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if d.Names == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, d.Names)
}

// String is the duration as --help shows its default: Go's syntax without
// trailing zero units ("5m", not "5m0s").
func (d *Duration) String() string {
	s := d.D.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func unitName(u time.Duration) string {
	switch u {
	case time.Millisecond:
		return "milliseconds"
	case time.Second:
		return "seconds"
	}
	return u.String()
}

// DurationFlag builds a flag of Duration with its legacy variables.
func DurationFlag(name string, def, bareUnit time.Duration, usage string, env ...string) *cli.GenericFlag {
	return &cli.GenericFlag{
		Name:    name,
		Usage:   usage + fmt.Sprintf(" (a duration, or a bare number of %s)", unitName(bareUnit)),
		EnvVars: env,
		Value:   &Duration{D: def, BareUnit: bareUnit, Names: strings.Join(append([]string{"--" + name}, env...), "/")},
	}
}

// GetDuration reads a flag made by DurationFlag.
func GetDuration(c *cli.Context, name string) time.Duration {
	return c.Generic(name).(*Duration).D
}
