package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun_FlagsAndChart(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-version", "v1.2.3"}, // nothing to do
		{"-version", "v1.2.3", "-oci", "x", "-platforms", "linux"}, // bad platform
		{"-chart", t.TempDir()}, // no version
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
	dir := t.TempDir()
	if err := run([]string{"-version", "v1.2.3", "-chart", dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fairway-1.2.3.tgz")); err != nil {
		t.Error(err)
	}
	if err := run([]string{"-version", "latest", "-chart", dir}); err == nil || !strings.Contains(err.Error(), "latest") {
		t.Errorf("run(-version latest -chart) = %v, want an error naming the version", err)
	}
}
