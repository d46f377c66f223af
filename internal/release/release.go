// Package release builds Fairway's release artifacts without Docker, in the
// way of ko: it cross-compiles cmd/fairway (CGO_ENABLED=0, -trimpath, the
// version and revision stamped with -X), lays each binary on an empty base as
// a single layer, and assembles a multi-platform OCI image index, which it
// writes to an OCI image layout directory (WriteLayout) or pushes to a
// registry (Push). The Helm chart archive comes from charts.Package.
//
// The image holds one file, /usr/local/bin/fairway (its entrypoint), and
// runs as the nonroot user 65532:65532; it carries the OCI labels
// org.opencontainers.image.{title,version,revision,source}. Fairway needs no
// CA certificates, passwd file or shell.
package release

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// Entrypoint is the binary's path in the image.
	Entrypoint = "/usr/local/bin/fairway"
	// User is the image's user and group: distroless's nonroot, the
	// runAsUser of deploy/ and the chart.
	User = "65532:65532"
	// Source is the org.opencontainers.image.source label.
	Source = "https://github.com/fairway-lb/fairway"
	// Package is the package built into the image, relative to the module.
	Package = "./cmd/fairway"
)

// OCI label (and index annotation) keys.
const (
	LabelTitle    = "org.opencontainers.image.title"
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelSource   = "org.opencontainers.image.source"
	// LabelRefName annotates the index in an OCI layout with its tag.
	LabelRefName = "org.opencontainers.image.ref.name"
)

// DefaultPlatforms are the platforms of a release.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

type options struct {
	revision  string
	moduleDir string
	goCmd     string
	logger    *slog.Logger
}

// Option configures Build.
type Option func(*options)

// WithRevision sets the VCS revision stamped into the binary (-X
// main.revision) and the revision label. Default: none (the binary says
// "revision unknown").
func WithRevision(rev string) Option { return func(o *options) { o.revision = rev } }

// WithModuleDir sets the directory of Fairway's module to build from.
// Default: the working directory.
func WithModuleDir(dir string) Option { return func(o *options) { o.moduleDir = dir } }

// WithGo sets the go command. Default: "go" from PATH.
func WithGo(goCmd string) Option { return func(o *options) { o.goCmd = goCmd } }

// WithLogger sets the logger of the build steps. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// ParsePlatforms parses a comma-separated list of os/arch[/variant]
// platforms, such as "linux/amd64,linux/arm64".
func ParsePlatforms(list string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, s := range strings.Split(list, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("fairway/release: platform %q is not os/arch[/variant]", s)
		}
		out = append(out, *p)
	}
	return out, nil
}

// Build compiles Fairway for each platform and returns the image index of
// version (one image per platform, in order).
func Build(ctx context.Context, version string, platforms []v1.Platform, opts ...Option) (v1.ImageIndex, error) {
	o := options{goCmd: "go", logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	o.logger = o.logger.With("component", "fairway/release")
	if version == "" || len(platforms) == 0 {
		return nil, fmt.Errorf("fairway/release: a version and at least one platform are needed")
	}
	labels := map[string]string{LabelTitle: "fairway", LabelVersion: version, LabelSource: Source}
	if o.revision != "" {
		labels[LabelRevision] = o.revision
	}
	tmp, err := os.MkdirTemp("", "fairway-release-")
	if err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	defer os.RemoveAll(tmp)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		bin := filepath.Join(tmp, strings.ReplaceAll(p.String(), "/", "-"))
		start := time.Now()
		if err := o.compile(ctx, p, version, bin); err != nil {
			return nil, err
		}
		o.logger.Info("compiled", "platform", p.String(), "elapsed", time.Since(start).Round(time.Millisecond))
		img, err := image(bin, p, labels)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, labels).(v1.ImageIndex), nil
}

// LDFlags are the linker flags of a release binary, as the Makefile's.
func LDFlags(version, revision string) string {
	return "-s -w -X main.version=" + version + " -X main.revision=" + revision
}

// compile cross-compiles Package for p into out.
func (o *options) compile(ctx context.Context, p v1.Platform, version, out string) error {
	cmd := exec.CommandContext(ctx, o.goCmd, "build", "-trimpath", "-ldflags", LDFlags(version, o.revision), "-o", out, Package)
	cmd.Dir = o.moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Variant != "" {
		switch p.Architecture {
		case "arm":
			cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
		case "arm64":
			cmd.Env = append(cmd.Env, "GOARM64="+p.Variant+".0")
		}
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("fairway/release: go build for %s: %w\n%s", p.String(), err, b)
	}
	return nil
}

// image returns the image of the binary at bin for p: one layer on an empty
// base, with the entrypoint, user and labels in its config.
func image(bin string, p v1.Platform, labels map[string]string) (v1.Image, error) {
	layerTar, err := binaryTar(bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("fairway/release: layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible, as ko's
	cf.Config = v1.Config{
		Entrypoint:   []string{Entrypoint},
		User:         User,
		WorkingDir:   "/",
		Labels:       labels,
		ExposedPorts: map[string]struct{}{"18000/tcp": {}, "9090/tcp": {}},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	return img, nil
}

// binaryTar returns the uncompressed layer: the directories down to
// Entrypoint and the binary, owned by root, world-readable and executable,
// with zero times.
func binaryTar(bin string) ([]byte, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("fairway/release: %w", err)
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(Entrypoint, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("fairway/release: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteLayout writes idx into a new OCI image layout at dir (replacing what
// was there), annotated with tag as its ref name, so that OCI tools can read
// it as dir:tag (skopeo copy oci:dir:tag docker://..., crane push dir ...).
func WriteLayout(dir, tag string, idx v1.ImageIndex) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("fairway/release: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("fairway/release: OCI layout %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{LabelRefName: tag})); err != nil {
		return fmt.Errorf("fairway/release: OCI layout %s: %w", dir, err)
	}
	return nil
}

// Push pushes idx to ref (such as ghcr.io/fairway-lb/fairway:v0.1.0) with
// the credentials of the default keychain (docker config, as `docker login`
// or `crane auth login` writes it). Registries on loopback are spoken to
// over plain HTTP.
func Push(ctx context.Context, ref string, idx v1.ImageIndex) error {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("fairway/release: image reference: %w", err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("fairway/release: push %s: %w", ref, err)
	}
	return nil
}
