package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func TestUsage_ListsEveryCommandOfBothTables(t *testing.T) {
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("fairway help: exit code %d, want 0", code)
	}
	help := stdout.String()
	for _, c := range commands {
		if c.name != "bench" && !strings.Contains(help, "fairway "+c.name) {
			t.Errorf("usage does not list %q:\n%s", c.name, help)
		}
	}
	for _, c := range benchCommands {
		if !strings.Contains(help, strings.Join(strings.Fields("fairway bench "+c.name+" "+c.args), " ")) || !strings.Contains(help, c.summary) {
			t.Errorf("usage does not list bench %q with its summary:\n%s", c.name, help)
		}
	}
}

func TestRun_BenchDispatchesEverySubcommand(t *testing.T) {
	for _, c := range benchCommands {
		args := []string{"bench", "-h"}
		want := "Usage of fairway bench:"
		if c.name != "" {
			args = []string{"bench", c.name, "-h"}
			want = "Usage of fairway bench " + c.name + ":"
		}
		var stdout bytes.Buffer
		if code := run(context.Background(), args, &stdout, io.Discard); code != 0 || !strings.Contains(stdout.String(), want) {
			t.Errorf("fairway %s: exit code %d, stdout %q; want 0 and %q", strings.Join(args, " "), code, stdout.String(), want)
		}
	}
}
