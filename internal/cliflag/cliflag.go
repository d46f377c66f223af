// Package cliflag parses the flags of fairway's commands the way the binary
// presents them: help that was asked for on stdout, mistakes on stderr, and
// flags written with two dashes, as the README writes them.
package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
)

// Parse parses args with fs (made with flag.ContinueOnError). Asked for help
// (-h, --help), it prints fs's usage on stdout and returns flag.ErrHelp; on a
// bad flag it prints the error and the usage on stderr and returns the error.
func Parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, on the right stream
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		PrintUsage(fs, stdout)
	case err != nil:
		PrintUsage(fs, stderr)
	}
	return err
}

// flagLine is the start of a flag's line in flag.PrintDefaults.
var flagLine = regexp.MustCompile(`(?m)^  -`)

// PrintUsage writes "Usage of NAME:" and fs's flags to w, each flag with two
// dashes (the flag package accepts one or two).
func PrintUsage(fs *flag.FlagSet, w io.Writer) {
	var b bytes.Buffer
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	fmt.Fprintf(w, "Usage of %s:\n%s", fs.Name(), flagLine.ReplaceAll(b.Bytes(), []byte("  --")))
}
