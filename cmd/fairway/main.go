// Command fairway is Fairway's one binary: the xDS control plane, the demo,
// and the benchmark harness.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
)

// subcommand is one command of the binary, or of `fairway bench`.
type subcommand struct {
	name    string // "" in benchCommands: `fairway bench` itself
	args    string // synopsis after the name, for the usage text
	summary string
	// run runs the command with its own FlagSet on args (the arguments after
	// its name) until it ends or ctx (cancelled on SIGINT/SIGTERM) is done.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is every command of the binary: run dispatches on this table and
// usage lists it (with benchCommands under "bench").
var commands = []subcommand{
	{name: "controlplane", args: "[flags]", summary: "serve xDS for a cluster (--kubeconfig) or a YAML file (--file)", run: runControlPlane},
	{name: "demo", args: "[flags]", summary: "run a control plane, backends and clients on loopback", run: runDemo},
	{name: "inspect", args: "--control-plane ADMIN_ADDR | --client ADDR [--name NAME]", summary: "show what a control plane serves and to whom, and what a client holds (CSDS)", run: runInspect},
	{name: "bench", run: runBench},
	{name: "version", summary: "print the version and VCS revision (also: fairway --version)", run: runVersion},
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	_, err := fmt.Fprintln(stdout, "fairway", versionString())
	return err
}

// lookup returns the command of table called name.
func lookup(table []subcommand, name string) (subcommand, bool) {
	for _, c := range table {
		if c.name == name {
			return c, true
		}
	}
	return subcommand{}, false
}

// usage is the binary's help text: every command of commands and
// benchCommands.
func usage() string {
	var b strings.Builder
	b.WriteString("fairway: request-level client-side load balancing for gRPC on Kubernetes\n\nUsage:\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	line := func(words ...string) {
		words = slices.DeleteFunc(words, func(w string) bool { return w == "" })
		fmt.Fprintf(tw, "  %s\t%s\n", strings.Join(words[:len(words)-1], " "), words[len(words)-1])
	}
	for _, c := range commands {
		if c.name != "bench" {
			line("fairway", c.name, c.args, c.summary)
			continue
		}
		for _, bc := range benchCommands {
			line("fairway", "bench", bc.name, bc.args, bc.summary)
		}
	}
	tw.Flush()
	b.WriteString("\nRun \"fairway COMMAND -h\" for a command's flags.\n")
	return b.String()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the subcommand named by args[0] until it ends or ctx is done, and
// returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, usage())
		return 2
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage())
		return 0
	case args[0] == "-version" || args[0] == "--version":
		args = []string{"version"}
	}
	cmd, ok := lookup(commands, args[0])
	if !ok {
		fmt.Fprintf(stderr, "fairway: unknown command %q\n\n%s", args[0], usage())
		return 2
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "fairway %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// newLogger returns a logger on w at the named level, in the named format
// (text or json).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want text or json", format)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}
