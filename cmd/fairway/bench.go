package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fairway-lb/fairway/bench"
	"github.com/fairway-lb/fairway/bench/cpbench"
	"github.com/fairway-lb/fairway/internal/cliflag"
)

// benchCommands is every `fairway bench` subcommand: runBench dispatches on
// this table and the usage text lists it. The entry named "" is `fairway
// bench [flags]` itself.
var benchCommands = []subcommand{
	{name: "", args: "[flags]", summary: "compare balancing strategies side by side", run: bench.CompareCommand},
	{name: "capacity", args: "[flags]", summary: "find the fewest pods each strategy needs for an SLO", run: bench.CapacityCommand},
	{name: "controlplane", args: "[flags]", summary: "measure the control plane's convergence against a real kube-apiserver", run: runBenchControlPlane},
}

// runBench is `fairway bench`: the subcommand named by args[0], else the
// comparison.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if sc, ok := lookup(benchCommands, args[0]); ok && sc.name != "" {
			return sc.run(ctx, args[1:], stdout, stderr)
		}
	}
	sc, _ := lookup(benchCommands, "")
	return sc.run(ctx, args, stdout, stderr)
}

// runBenchControlPlane is `fairway bench controlplane` (package cpbench),
// run against this very binary unless --fairway-bin names another.
func runBenchControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fairway bench controlplane", flag.ContinueOnError)
	cfg := cpbench.RegisterFlags(fs)
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.FairwayBin == "" {
		// The control plane under test is this very binary, run as a child.
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the fairway binary (give --fairway-bin): %w", err)
		}
		cfg.FairwayBin = exe
	}
	_, err := cpbench.Run(ctx, *cfg, stdout)
	return err
}
