package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fairway-lb/fairway/internal/cliflag"
)

// The command lines of package bench. cmd/fairway's table of `fairway bench`
// subcommands dispatches to them; each parses its own flags from args (the
// arguments after the subcommand's name), draws progress on stderr and prints
// its table on stdout. -h prints the flags on stdout and returns flag.ErrHelp.

// CompareCommand is `fairway bench [flags]`: the side-by-side comparison
// (Run), with its --json and --plot outputs.
func CompareCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fairway bench", flag.ContinueOnError)
	f, build := RegisterFlags(fs)
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	rep, err := Run(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if f.JSON != "" {
		if err := writeFile(f.JSON, rep.WriteJSON); err != nil {
			return err
		}
	}
	if f.Plot != "" {
		paths, err := rep.WritePlots(f.Plot)
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Fprintln(stdout, "wrote", p)
		}
	}
	return nil
}

// CapacityCommand is `fairway bench capacity [flags]`: the capacity search
// (Capacity), with its --json output.
func CapacityCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fairway bench capacity", flag.ContinueOnError)
	f, build := RegisterCapacityFlags(fs)
	if err := cliflag.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	rep, err := Capacity(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if f.JSON != "" {
		return writeFile(f.JSON, rep.WriteJSON)
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	if path == "-" {
		return write(os.Stdout)
	}
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("fairway/bench: %w", err)
	}
	if err := write(fh); err != nil {
		fh.Close()
		return fmt.Errorf("fairway/bench: %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("fairway/bench: %s: %w", path, err)
	}
	return nil
}
