package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/testkit"
)

// A control plane whose API server refuses connections says so at Warn
// within 5 s, in JSON with --log-format json, and /readyz names the error.
func TestControlPlane_UnreachableAPIServerIsLoud(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: closed, cluster: {server: "http://%s"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: closed, context: {cluster: closed, user: nobody}}]
current-context: closed
`, testkit.FreeAddr(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, adminAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	log := newLog(t)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"controlplane", "--kubeconfig", kubeconfig, "--log-format", "json",
			"--xds-addr", xdsAddr, "--admin-addr", adminAddr}, io.Discard, log)
	}()
	defer func() {
		stop()
		if code := testkit.Recv(t, done, "the control plane to stop"); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	}()

	within(t, 5*time.Second, "a JSON Warn naming the refused connection", func() bool {
		for _, line := range strings.Split(log.String(), "\n") {
			var rec struct{ Level, Error, Component string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" &&
				rec.Component == "fairway/kube" && strings.Contains(rec.Error, "connection refused") {
				return true
			}
		}
		return false
	}, nil)

	resp, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.String(), "connection refused") {
		t.Errorf("/readyz: %d %q; want 503 naming the refused connection", resp.StatusCode, body.String())
	}
}

func TestNewLogger_RejectsUnknownFormat(t *testing.T) {
	if _, err := newLogger(io.Discard, "info", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("newLogger(xml) = %v, want an error naming --log-format", err)
	}
}
