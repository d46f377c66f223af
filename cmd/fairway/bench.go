package main

import (
	"context"
	"io"

	"github.com/fairway-lb/fairway/bench"
)

// runBench is `fairway bench`: the side-by-side balancing comparison, and
// `fairway bench capacity` (see package bench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Command(ctx, args, stdout, stderr)
}
