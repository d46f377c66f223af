// Package cpbench measures how fast the Fairway control plane converges
// against a real kube-apiserver: the time from an EndpointSlice write
// returning to the change reaching ADS subscribers, the bytes each
// single-endpoint change costs under State-of-the-World and delta xDS, and
// the control plane's memory and CPU.
//
// Run does, in order:
//
//  1. Starts etcd + kube-apiserver on loopback (package internal/testenv, the
//     binaries built by `make kubebins`), or uses the cluster of
//     Config.Kubeconfig.
//  2. Creates Config.Services Services in Config.Namespace, each with one
//     EndpointSlice of Config.Endpoints endpoints. Addresses come from
//     10.0.0.0/8 and are never dialled: only what the control plane serves
//     over ADS is read.
//  3. Starts the control plane as a separate process (`fairway controlplane
//     --kubeconfig ...`, the binary Config.FairwayBin, or one built with `go
//     build`), so its RSS (/proc/PID/status VmRSS, VmHWM) and CPU time
//     (/proc/PID/stat utime+stime) are its own, and waits for its /readyz,
//     which answers once the first full snapshot is pushed.
//  4. Opens Config.Streams raw ADS streams over Config.Conns gRPC
//     connections to 127.0.0.1, a Config.DeltaFraction share of them delta
//     and the rest SotW. Each subscribes by name to between
//     Config.MinSubscriptions and Config.MaxSubscriptions services'
//     ClusterLoadAssignments, assigned round robin so that every service has
//     subscribers, and ACKs every response.
//  5. Makes Config.Changes changes, each to one endpoint of one service
//     chosen at random among those with no change in flight: alternately its
//     ready condition flipped and its address replaced by a fresh one. A
//     change is recognised by content (the endpoint's address with the
//     expected health status) in the ClusterLoadAssignments subscribers
//     receive; the latency of a change is measured from the Update call
//     returning to the first and to the last subscriber of that service
//     seeing it.
//
// The report (markdown, to out) gives setup time, time to the first full
// snapshot, latency percentiles, RSS and CPU, and bytes and resources per
// change for SotW and delta, next to the targets: p99 ≤ 100 ms including the
// debounce, RSS ≤ 300 MB, delta sends exactly one ClusterLoadAssignment per
// subscribed stream per change.
//
// # Command-line wiring
//
// `fairway bench controlplane` wires the package as:
//
//	fs := flag.NewFlagSet("fairway bench controlplane", flag.ContinueOnError)
//	cfg := cpbench.RegisterFlags(fs)
//	if err := fs.Parse(args); err != nil { return err }
//	if cfg.FairwayBin == "" {
//		cfg.FairwayBin, _ = os.Executable() // the running fairway binary
//	}
//	_, err := cpbench.Run(ctx, *cfg, stdout)
//
// Without Config.FairwayBin, Run builds github.com/fairway-lb/fairway/cmd/fairway
// with the Go toolchain, which needs the module's source (the working
// directory inside it).
//
// The package imports client-go to create and change the objects, as a user
// of the cluster would; the control plane under test reads them through its
// own informers.
package cpbench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/fairway-lb/fairway/internal/testenv"
)

// Config configures Run. DefaultConfig returns the full target scale.
type Config struct {
	// Kubeconfig names the cluster to use. Empty: start a private etcd +
	// kube-apiserver from BinDir.
	Kubeconfig string
	// BinDir holds kube-apiserver and etcd (default testenv.DefaultBinDir()).
	BinDir string
	// FairwayBin is the fairway binary to run as the control plane. Empty:
	// build cmd/fairway with `go build`.
	FairwayBin string
	// Namespace holds the benchmark's Services and EndpointSlices. Run
	// creates it and refuses to use one that exists; with an external
	// cluster it deletes the objects and the namespace at the end.
	Namespace string

	Services  int // Services, one port each
	Endpoints int // endpoints per Service, in one EndpointSlice

	Streams          int     // ADS streams
	Conns            int     // gRPC connections the streams share
	DeltaFraction    float64 // share of the streams that use delta xDS (0..1)
	MinSubscriptions int     // fewest services per stream
	MaxSubscriptions int     // most services per stream

	Changes        int           // single-endpoint changes to make
	ChangeInterval time.Duration // least time between two changes
	ChangeJitter   time.Duration // random extra time between two changes, [0, ChangeJitter)
	ChangeTimeout  time.Duration // a change unseen by a subscriber after this long is missed

	Debounce time.Duration // the control plane's --debounce

	QPS         float32 // client-go QPS of the harness
	Burst       int     // client-go burst of the harness
	Parallelism int     // concurrent create calls during setup

	Seed int64 // random seed (services and endpoints changed, subscriptions)

	// Logger receives progress lines (default: discard).
	Logger *slog.Logger
}

// DefaultConfig returns the target scale: 1,000 services × 10 endpoints,
// 1,000 streams (half delta) over 10 connections, 200 changes.
func DefaultConfig() Config {
	return Config{
		BinDir:           testenv.DefaultBinDir(),
		Namespace:        "fairway-bench",
		Services:         1000,
		Endpoints:        10,
		Streams:          1000,
		Conns:            10,
		DeltaFraction:    0.5,
		MinSubscriptions: 1,
		MaxSubscriptions: 10,
		Changes:          200,
		ChangeInterval:   50 * time.Millisecond,
		ChangeJitter:     50 * time.Millisecond,
		ChangeTimeout:    10 * time.Second,
		Debounce:         20 * time.Millisecond,
		QPS:              200,
		Burst:            400,
		Parallelism:      32,
		Seed:             1,
	}
}

// RegisterFlags defines the benchmark's flags on fs, bound to a Config that
// starts as DefaultConfig, and returns it. Read it after fs.Parse.
func RegisterFlags(fs *flag.FlagSet) *Config {
	c := DefaultConfig()
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "cluster to use (default: start a private etcd + kube-apiserver)")
	fs.StringVar(&c.BinDir, "bin-dir", c.BinDir, "folder holding kube-apiserver and etcd (see `make kubebins`)")
	fs.StringVar(&c.FairwayBin, "fairway-bin", "", "fairway binary to run as the control plane (default: this binary)")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace for the benchmark's objects (must not exist)")
	fs.IntVar(&c.Services, "services", c.Services, "number of Services")
	fs.IntVar(&c.Endpoints, "endpoints", c.Endpoints, "endpoints per Service (one EndpointSlice)")
	fs.IntVar(&c.Streams, "streams", c.Streams, "ADS streams")
	fs.IntVar(&c.Conns, "conns", c.Conns, "gRPC connections shared by the streams")
	fs.Float64Var(&c.DeltaFraction, "delta-fraction", c.DeltaFraction, "share of the streams using delta xDS (0..1)")
	fs.IntVar(&c.MinSubscriptions, "min-subs", c.MinSubscriptions, "fewest services a stream subscribes to")
	fs.IntVar(&c.MaxSubscriptions, "max-subs", c.MaxSubscriptions, "most services a stream subscribes to")
	fs.IntVar(&c.Changes, "changes", c.Changes, "single-endpoint changes to make")
	fs.DurationVar(&c.ChangeInterval, "change-interval", c.ChangeInterval, "least time between two changes")
	fs.DurationVar(&c.ChangeJitter, "change-jitter", c.ChangeJitter, "random extra time between two changes")
	fs.DurationVar(&c.ChangeTimeout, "change-timeout", c.ChangeTimeout, "a change not seen by a subscriber within this is missed")
	fs.DurationVar(&c.Debounce, "debounce", c.Debounce, "the control plane's --debounce")
	fs.Func("qps", fmt.Sprintf("client-go QPS of the harness (default %v)", c.QPS), func(s string) error {
		var v float32
		if _, err := fmt.Sscan(s, &v); err != nil {
			return err
		}
		c.QPS = v
		return nil
	})
	fs.IntVar(&c.Burst, "burst", c.Burst, "client-go burst of the harness")
	fs.IntVar(&c.Parallelism, "parallelism", c.Parallelism, "concurrent create calls during setup")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "random seed")
	return &c
}

// validate checks c and fills defaults.
func (c *Config) validate() error {
	var errs []error
	if c.BinDir == "" {
		c.BinDir = testenv.DefaultBinDir()
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	if c.Services < 1 || c.Endpoints < 1 || c.Streams < 1 || c.Conns < 1 {
		errs = append(errs, fmt.Errorf("services (%d), endpoints (%d), streams (%d) and conns (%d) must be at least 1", c.Services, c.Endpoints, c.Streams, c.Conns))
	}
	if c.Services*c.Endpoints > 1<<22 {
		errs = append(errs, fmt.Errorf("%d endpoints do not fit the address plan (at most %d)", c.Services*c.Endpoints, 1<<22))
	}
	if c.DeltaFraction < 0 || c.DeltaFraction > 1 {
		errs = append(errs, fmt.Errorf("delta fraction %v is not within 0..1", c.DeltaFraction))
	}
	if c.MinSubscriptions < 1 || c.MaxSubscriptions < c.MinSubscriptions {
		errs = append(errs, fmt.Errorf("subscriptions per stream %d..%d: want 1 ≤ min ≤ max", c.MinSubscriptions, c.MaxSubscriptions))
	}
	if c.Changes < 1 {
		errs = append(errs, fmt.Errorf("changes %d: want at least 1", c.Changes))
	}
	if c.ChangeInterval < 0 || c.ChangeJitter < 0 || c.ChangeTimeout <= 0 || c.Debounce < 0 {
		errs = append(errs, errors.New("change interval, jitter and debounce must not be negative and change timeout must be positive"))
	}
	if c.Parallelism < 1 {
		c.Parallelism = 1
	}
	if c.QPS <= 0 {
		c.QPS = 200
	}
	if c.Burst <= 0 {
		c.Burst = 400
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fairway/cpbench: invalid config: %w", err)
	}
	return nil
}
