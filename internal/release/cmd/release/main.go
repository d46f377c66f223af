// Command release builds Fairway's images and chart without Docker (see
// package internal/release); the Makefile's image and release targets run it:
//
//	go run ./internal/release/cmd/release -version v0.1.0 -revision $(git rev-parse HEAD) \
//		-platforms linux/amd64,linux/arm64 -oci dist/oci                        # make image
//	go run ./internal/release/cmd/release -version v0.1.0 -revision ... \
//		-push ghcr.io/fairway-lb/fairway:v0.1.0 -chart dist                    # make release
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fairway-lb/fairway/charts"
	"github.com/fairway-lb/fairway/internal/release"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	version := fs.String("version", "", "the release version (vX.Y.Z; any tag for -oci)")
	revision := fs.String("revision", "", "the VCS revision stamped into the binary and the labels")
	platforms := fs.String("platforms", strings.Join(release.DefaultPlatforms, ","), "comma-separated os/arch list")
	oci := fs.String("oci", "", "write the image index to this OCI layout directory")
	push := fs.String("push", "", "push the image index to this reference (registry/repository:tag)")
	chartDir := fs.String("chart", "", "write the Helm chart archive of -version into this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || (*oci == "" && *push == "" && *chartDir == "") {
		return fmt.Errorf("release: -version and at least one of -oci, -push, -chart are needed")
	}
	ps, err := release.ParsePlatforms(*platforms)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *chartDir != "" {
		path, err := charts.Package(*chartDir, *version)
		if err != nil {
			return err
		}
		log.Info("chart packaged", "path", path)
	}
	if *oci == "" && *push == "" {
		return nil
	}
	idx, err := release.Build(ctx, *version, ps, release.WithRevision(*revision), release.WithLogger(log))
	if err != nil {
		return err
	}
	if *oci != "" {
		if err := release.WriteLayout(*oci, *version, idx); err != nil {
			return err
		}
		log.Info("OCI layout written", "dir", *oci, "tag", *version, "platforms", *platforms)
	}
	if *push != "" {
		if err := release.Push(ctx, *push, idx); err != nil {
			return err
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		log.Info("pushed", "ref", *push, "digest", d.String())
	}
	return nil
}
