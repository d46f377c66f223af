package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("fairway x", flag.ContinueOnError)
	fs.String("admin-addr", "", "admin address")
	return fs
}

func TestParse_HelpOnStdoutWithTwoDashes(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := Parse(newFlagSet(), []string{"-h"}, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
	if got := stdout.String(); !strings.HasPrefix(got, "Usage of fairway x:\n") || !strings.Contains(got, "\n  --admin-addr string") || stderr.Len() > 0 {
		t.Errorf("stdout %q, stderr %q; want the usage with --admin-addr on stdout only", got, stderr.String())
	}
}

func TestParse_BadFlagOnStderr(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := Parse(newFlagSet(), []string{"--nope"}, &stdout, &stderr); err == nil || errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--nope) = %v, want an error", err)
	}
	if got := stderr.String(); !strings.Contains(got, "flag provided but not defined: -nope") || !strings.Contains(got, "  --admin-addr") || stdout.Len() > 0 {
		t.Errorf("stdout %q, stderr %q; want the error and the usage on stderr only", stdout.String(), got)
	}
}
