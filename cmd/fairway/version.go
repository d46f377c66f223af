package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// version and revision are set at link time by the Makefile and the
// Dockerfile (-ldflags "-X main.version=v0.1.0 -X main.revision=<commit>");
// empty: taken from the build info. The revision matters where `go build`
// stamps none: a Docker build context without .git, a git worktree (Go
// looks for a .git directory, a worktree has a .git file).
var version, revision = "", ""

// versionString is what `fairway version` and `fairway --version` print
// after "fairway ": the release version (or the module version a `go install
// ...@vX` records, else "devel"), then the VCS revision that `go build`
// stamps in a git checkout, marked "modified" when the tree had uncommitted
// changes. A binary built without VCS information (outside a checkout, with
// -buildvcs=false, or by `go test`) says so instead of inventing a revision.
func versionString() string {
	info, _ := debug.ReadBuildInfo()
	return versionFrom(info, version, revision)
}

// versionFrom is versionString over a given build info (nil: none) and -X
// overrides.
func versionFrom(info *debug.BuildInfo, override, overrideRev string) string {
	v := override
	if v == "" && info != nil && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if v == "" {
		v = "devel"
	}
	var rev, modified string
	goVersion := "unknown Go"
	if info != nil {
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	if overrideRev != "" {
		rev, modified = overrideRev, ""
	}
	details := []string{"revision unknown (built without VCS information)"}
	if rev != "" {
		details = []string{"revision " + rev}
		if modified == "true" {
			details = append(details, "modified")
		}
	}
	details = append(details, goVersion)
	return fmt.Sprintf("%s (%s)", v, strings.Join(details, ", "))
}
