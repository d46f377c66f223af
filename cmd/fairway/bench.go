package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fairway-lb/fairway/bench"
	"github.com/fairway-lb/fairway/bench/cpbench"
)

// runBench is `fairway bench`: the side-by-side balancing comparison and
// `fairway bench capacity` (package bench), and `fairway bench controlplane`,
// the control plane's convergence against a real kube-apiserver (package
// cpbench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "controlplane" {
		return runBenchControlPlane(ctx, args[1:], stdout, stderr)
	}
	return bench.Command(ctx, args, stdout, stderr)
}

func runBenchControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fairway bench controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := cpbench.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
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
