// Command devcluster starts a local etcd + kube-apiserver (the same
// environment the tests use), prints the admin kubeconfig path and runs until
// interrupted:
//
//	make dev-cluster
//	# or: go run ./internal/testenv/cmd/devcluster [-dir DIR]
//
// Build the binaries first with "make kubebins". Then, in another terminal:
//
//	fairway controlplane --kubeconfig <printed path>
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fairway-lb/fairway/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		slog.Error("devcluster failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "state folder (etcd data, certificates, kubeconfig, logs); default: a new temporary folder, removed on exit")
	binDir := flag.String("bin-dir", testenv.DefaultBinDir(), "folder holding kube-apiserver and etcd (see `make kubebins`)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	stateDir := *dir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "fairway-devcluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		stateDir = d
	}

	start := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	env, err := testenv.StartProcess(startCtx, stateDir, testenv.WithBinDir(*binDir))
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			slog.Error("stop", "error", err)
		}
	}()

	fmt.Printf("kube-apiserver %s ready at %s in %v\n", testenv.KubeVersion, env.Host(), time.Since(start).Round(time.Millisecond))
	fmt.Printf("kubeconfig: %s\n\n", env.KubeconfigPath)
	fmt.Printf("  export KUBECONFIG=%s\n", env.KubeconfigPath)
	fmt.Printf("  fairway controlplane --kubeconfig %s\n", env.KubeconfigPath)
	fmt.Printf("  kubectl create token SERVICEACCOUNT -n NAMESPACE --audience fairway   # an xDS client's token (or --auth none)\n\n")
	fmt.Printf("logs in %s; press Ctrl-C to stop\n", stateDir)

	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}
