package release_test

import (
	"archive/tar"
	"context"
	"flag"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/internal/release"
)

// Cross-compiling Fairway cold takes minutes per platform on a small
// machine, so by default the test builds this machine's platform only; a
// release's two are checked with
//
//	go test ./internal/release -run TestImage -platforms linux/amd64,linux/arm64
var platforms = flag.String("platforms", "linux/"+runtime.GOARCH, "platforms to build, comma-separated")

func TestMain(m *testing.M) {
	flag.Parse()
	goleak.VerifyTestMain(m)
}

const (
	version  = "v0.0.0-test"
	revision = "0123456789abcdef0123456789abcdef01234567"
)

// moduleDir is the module root, two directories up.
func moduleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestImage builds the image index, pushes it to a registry on loopback,
// pulls it back and checks each platform's image: config (entrypoint, user,
// labels, platform) and, for this machine's platform, that the binary in
// the layer runs and prints the stamped version.
func TestImage(t *testing.T) {
	ps, err := release.ParsePlatforms(*platforms)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	idx, err := release.Build(ctx, version, ps, release.WithRevision(revision), release.WithModuleDir(moduleDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", *platforms, time.Since(start).Round(time.Millisecond))

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if !strings.HasPrefix(host, "127.0.0.1:") {
		t.Fatalf("registry on %s, want 127.0.0.1", host)
	}
	ref := host + "/fairway-lb/fairway:" + version
	if err := release.Push(ctx, ref, idx); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	checkIndex(t, pulled, ps)

	t.Run("OCILayout", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		if err := release.WriteLayout(dir, version, idx); err != nil {
			t.Fatal(err)
		}
		root, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := root.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 || m.Manifests[0].Annotations[release.LabelRefName] != version {
			t.Fatalf("layout index.json = %+v, want one index named %s", m.Manifests, version)
		}
		inner, err := root.ImageIndex(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkIndex(t, inner, ps)
	})
}

func checkIndex(t *testing.T, idx v1.ImageIndex, ps []v1.Platform) {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", m.MediaType, types.OCIImageIndex)
	}
	var got []string
	for _, d := range m.Manifests {
		got = append(got, d.Platform.String())
	}
	var want []string
	for _, p := range ps {
		want = append(want, p.String())
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Fatalf("index platforms (-got +want):\n%s", diff)
	}
	wantLabels := map[string]string{
		release.LabelTitle:    "fairway",
		release.LabelVersion:  version,
		release.LabelRevision: revision,
		release.LabelSource:   release.Source,
	}
	if diff := cmp.Diff(m.Annotations, wantLabels); diff != "" {
		t.Errorf("index annotations (-got +want):\n%s", diff)
	}
	for i, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != ps[i].OS || cf.Architecture != ps[i].Architecture {
			t.Errorf("%s: config platform %s/%s", d.Platform, cf.OS, cf.Architecture)
		}
		if diff := cmp.Diff(cf.Config.Entrypoint, []string{release.Entrypoint}); diff != "" {
			t.Errorf("%s: entrypoint (-got +want):\n%s", d.Platform, diff)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", d.Platform, cf.Config.User)
		}
		if diff := cmp.Diff(cf.Config.Labels, wantLabels); diff != "" {
			t.Errorf("%s: labels (-got +want):\n%s", d.Platform, diff)
		}
		if ps[i].OS == runtime.GOOS && ps[i].Architecture == runtime.GOARCH {
			runVersion(t, img)
		}
	}
}

// runVersion extracts the binary from img's layer and runs it with --version.
func runVersion(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	bin := filepath.Join(t.TempDir(), "fairway")
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if "/"+h.Name != release.Entrypoint {
			continue
		}
		if h.Mode&0o111 != 0o111 || h.Uid != 0 {
			t.Errorf("%s: mode %o uid %d, want executable by all, owned by root", h.Name, h.Mode, h.Uid)
		}
		f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(names, []string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/fairway"}); diff != "" {
		t.Errorf("layer files (-got +want):\n%s", diff)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("fairway --version: %v\n%s", err, out)
	}
	if want := "fairway " + version + " (revision " + revision; !strings.HasPrefix(string(out), want) {
		t.Errorf("fairway --version = %q, want %q...", out, want)
	}
}

func TestParsePlatforms(t *testing.T) {
	ps, err := release.ParsePlatforms("linux/amd64, linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].Architecture != "arm64" {
		t.Errorf("ParsePlatforms = %v", ps)
	}
	for _, bad := range []string{"", "linux", "linux/amd64,"} {
		if _, err := release.ParsePlatforms(bad); err == nil {
			t.Errorf("ParsePlatforms(%q) succeeded, want an error", bad)
		}
	}
}
