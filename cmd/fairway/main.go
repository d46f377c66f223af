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
	"strings"
	"syscall"
)

const usage = `fairway: request-level client-side load balancing for gRPC on Kubernetes

Usage:
  fairway controlplane [flags]   serve xDS for a cluster (--kubeconfig) or a YAML file (--file)
  fairway demo [flags]           run a control plane, backends and clients on loopback
  fairway bench [flags]          compare balancing strategies side by side
  fairway bench capacity [flags] find the fewest pods each strategy needs for an SLO
  fairway version                print the version

Run "fairway COMMAND -h" for a command's flags.
`

var version = "dev"

// commands maps a subcommand to its entry point. Each gets its own FlagSet
// and arguments, and a context cancelled on SIGINT/SIGTERM.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"controlplane": runControlPlane,
	"demo":         runDemo,
	"bench":        runBench,
	"version": func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		_, err := fmt.Fprintln(stdout, "fairway", version)
		return err
	},
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
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "fairway: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "fairway %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
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
