// Package cli is the small command-line machinery vpclab's commands share:
// flags that may come before or after positional arguments, --help for
// every command, one-line usage errors with exit code 2, and one place that
// prints errors and picks the exit code (as kind's cmd does).
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// UsageError is a bad invocation: one line, exit code 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return UsageError{fmt.Sprintf(format, a...)} }

// Help carries a command's usage, printed on stdout with exit code 0.
type Help struct{ Text string }

func (h Help) Error() string { return h.Text }

// Flags is a command's flag set with its usage line.
type Flags struct {
	*flag.FlagSet
	prog, usage, footer string
}

// NewFlags returns the flags of "prog usage"; footer is appended to the
// help (flags every command takes, say).
func NewFlags(prog, usage, footer string) *Flags {
	fs := flag.NewFlagSet(usage, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &Flags{FlagSet: fs, prog: prog, usage: usage, footer: footer}
}

// Help renders the command's usage and flags.
func (f *Flags) Help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s %s\n", f.prog, f.usage)
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nflags:\n")
		f.SetOutput(&b)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	b.WriteString(f.footer)
	return b.String()
}

// Parse parses flags anywhere among the positional arguments; everything
// from "--" on is positional. want is the number of positional arguments
// before any "--" (-1: any).
func (f *Flags) Parse(args []string, want int) ([]string, error) {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i:]
			break
		}
	}
	var pos []string
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, Help{f.Help()}
			}
			return nil, Usagef("%v", err)
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if want >= 0 && len(pos) != want {
		if len(pos) > want {
			return nil, Usagef("unexpected argument %q (usage: %s %s)", pos[want], f.prog, f.usage)
		}
		return nil, Usagef("usage: %s %s", f.prog, f.usage)
	}
	return append(pos, tail...), nil
}

// Set reports whether the flag was given.
func (f *Flags) Set(name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// Sub splits "group sub args…": it returns the subcommand, or the group's
// help for -h, or a usage error naming the valid ones.
func Sub(prog string, args []string, usage string, valid ...string) (string, []string, error) {
	group := strings.Fields(usage)[0]
	if len(args) == 0 {
		return "", nil, Usagef("usage: %s %s", prog, usage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		return "", nil, Help{fmt.Sprintf("usage: %s %s\n(each subcommand takes --help)\n", prog, usage)}
	}
	for _, v := range valid {
		if args[0] == v {
			return v, args[1:], nil
		}
	}
	return "", nil, Usagef("%s %q: want %s", group, args[0], OrList(valid))
}

// OrList is "a, b or c".
func OrList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// OneOf checks that v is one of the allowed values of flag name.
func OneOf(name, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return Usagef("%s %q: want %s", name, v, OrList(allowed))
}

// OneLine folds a multi-line message into one line.
func OneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// Exit prints err as the command's one line and returns the exit code: 0
// for nil and help (printed on stdout), 2 for usage errors and for errors
// for which bad says so, else 1.
func Exit(prog, cmd string, err error, bad func(error) bool, stdout, stderr io.Writer) int {
	var help Help
	var ue UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.Text)
		return 0
	case errors.As(err, &ue) || (bad != nil && bad(err)):
		fmt.Fprintf(stderr, "%s %s: %s\n", prog, cmd, OneLine(err.Error()))
		return 2
	}
	fmt.Fprintf(stderr, "%s %s: %s\n", prog, cmd, OneLine(err.Error()))
	return 1
}

// TakeFlag removes a string flag (--name V, --name=V, -name …) from args,
// wherever it is before "--", so it can precede or follow a command.
func TakeFlag(args []string, name string) (value string, set bool, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return value, set, append(rest, args[i:]...), nil
		case a == "--"+name || a == "-"+name:
			if i+1 >= len(args) {
				return "", false, nil, Usagef("--%s needs a value", name)
			}
			value, set, i = args[i+1], true, i+1
		case strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"="):
			_, value, _ = strings.Cut(a, "=")
			set = true
		default:
			rest = append(rest, a)
		}
	}
	return value, set, rest, nil
}

// SubFlags splits "group sub …" into the subcommand and its flags; usages
// maps each subcommand to its usage line, listed in the order of subs.
func SubFlags(prog, footer string, args []string, usages map[string]string, subs ...string) (string, *Flags, []string, error) {
	lines := make([]string, len(subs))
	for i, s := range subs {
		lines[i] = usages[s]
	}
	sub, rest, err := Sub(prog, args, strings.Join(lines, " | "), subs...)
	if err != nil {
		return "", nil, nil, err
	}
	return sub, NewFlags(prog, usages[sub], footer), rest, nil
}

// Output declares -o with the formats a command supports (the first is
// the default) and returns the check that reads it.
func (f *Flags) Output(formats ...string) func() (string, error) {
	o := f.String("o", formats[0], OrList(formats))
	return func() (string, error) { return *o, OneOf("-o", *o, formats...) }
}

// NeedRoot refuses to go on without root, saying why root is needed.
func NeedRoot(why string) error {
	if os.Geteuid() != 0 {
		return Usagef("must run as root (%s)", why)
	}
	return nil
}
