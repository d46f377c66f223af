package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFrom_BuildInfoAndOverrides(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name         string
		info         *debug.BuildInfo
		version, rev string
		want         string
	}{
		{"no build info", nil, "", "", "devel (revision unknown (built without VCS information), unknown Go)"},
		{"go test or -buildvcs=false", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			"devel (revision unknown (built without VCS information), go1.26.8)"},
		{"checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("abc123", "false")}, "", "",
			"devel (revision abc123, go1.26.8)"},
		{"dirty checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs("abc123", "true")}, "", "",
			"devel (revision abc123, modified, go1.26.8)"},
		{"go install @v0.2.0", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.2.0"}}, "", "",
			"v0.2.0 (revision unknown (built without VCS information), go1.26.8)"},
		{"release build", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs("abc123", "true")}, "v0.1.0", "def456",
			"v0.1.0 (revision def456, go1.26.8)"},
	} {
		if got := versionFrom(tc.info, tc.version, tc.rev); got != tc.want {
			t.Errorf("%s: versionFrom = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRun_VersionFlagAndHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var stdout bytes.Buffer
		if code := run(context.Background(), args, &stdout, io.Discard); code != 0 || stdout.String() != "fairway "+versionString()+"\n" {
			t.Errorf("fairway %s: exit %d, stdout %q", args[0], code, stdout.String())
		}
	}
	for _, arg := range []string{"help", "-h", "--help"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{arg}, &stdout, &stderr); code != 0 || stdout.String() != usage() || stderr.Len() > 0 {
			t.Errorf("fairway %s: exit %d, stdout %q, stderr %q; want the usage on stdout", arg, code, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), nil, &stdout, &stderr); code != 2 || stdout.Len() > 0 || stderr.String() != usage() {
		t.Errorf("fairway: exit %d, stdout %q; want 2 and the usage on stderr", code, stdout.String())
	}
}

// On a clean clone, `go build` stamps the commit and `fairway --version`
// prints it. Outside a git checkout (a module zip, a source tarball) there
// is no revision to print, and the binary says so.
func TestVersion_CleanCloneBuildPrintsRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Logf("not in a git checkout (%v): checking the no-VCS build", err)
		got := buildAndVersion(t, ".", "-buildvcs=false")
		if !strings.Contains(got, "revision unknown") {
			t.Fatalf("fairway --version = %q, want it to say the revision is unknown", got)
		}
		return
	}
	rev := strings.TrimSpace(string(out))
	clone := filepath.Join(t.TempDir(), "fairway")
	for _, args := range [][]string{{"clone", "--quiet", "--no-checkout", "../..", clone}, {"-C", clone, "checkout", "--quiet", rev}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	got := buildAndVersion(t, filepath.Join(clone, "cmd", "fairway"), "-buildvcs=true")
	if want := "(revision " + rev + ","; !strings.Contains(got, want) || strings.Contains(got, "modified") {
		t.Fatalf("fairway --version = %q, want %q and no \"modified\"", got, want)
	}
}

// buildAndVersion builds ./cmd/fairway in dir with the extra build flag and
// returns what `fairway --version` prints.
func buildAndVersion(t *testing.T, dir, flag string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fairway")
	build := exec.Command("go", "build", flag, "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=") // the machine's GOFLAGS may say -buildvcs=false
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("fairway --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}
