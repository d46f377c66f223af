package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
)

// Command is the whole `fairway bench` command line: args are the arguments
// after "bench" ("capacity" first for the capacity search). It draws progress
// on stderr, prints the table on stdout, and writes --json and --plot
// outputs. -h returns flag.ErrHelp.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "capacity" {
		return capacityCommand(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("fairway bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f, build := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
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

func capacityCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fairway bench capacity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f, build := RegisterCapacityFlags(fs)
	if err := fs.Parse(args); err != nil {
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
