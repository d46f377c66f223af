package kube_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// recordHandler is a slog.Handler that sends every record at Warn or above
// to records (dropping it when records is full).
type recordHandler struct{ records chan slog.Record }

func (h recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.records <- r.Clone():
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// attr returns the value of r's attribute key as a string.
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func TestNewForConfig_UnreachableAPIServerWarnsWithinFiveSeconds(t *testing.T) {
	records := make(chan slog.Record, 100)
	reg := prometheus.NewRegistry()
	cfg := &rest.Config{Host: "http://" + testkit.FreeAddr(t)}
	src, err := kube.NewForConfig(cfg, kube.WithLogger(slog.New(recordHandler{records})), kube.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, newRecordingSink()) }()
	defer func() {
		cancel()
		if err := testkit.Recv(t, done, "Run to return"); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r := testkit.RecvWithin(t, records, 5*time.Second, "a Warn")
	if r.Level != slog.LevelWarn || !strings.Contains(attr(r, "error"), "connection refused") {
		t.Fatalf("first record: %v %q error=%q; want a Warn naming the refused connection", r.Level, r.Message, attr(r, "error"))
	}
	if err := src.LastError(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("LastError() = %v, want the refused connection", err)
	}
	if n := testkit.MetricValue(t, reg, "fairway_kube_watch_errors_total"); n < 1 {
		t.Errorf("fairway_kube_watch_errors_total = %v, want at least 1", n)
	}
	if src.Synced() {
		t.Error("Synced() = true with no API server")
	}
}

func TestNewForConfig_ReachableAPIServerIsQuiet(t *testing.T) {
	ctx, _, ns := begin(t, 60*time.Second)
	records := make(chan slog.Record, 100)
	reg := prometheus.NewRegistry()
	src, err := kube.NewForConfig(sharedEnv(t).Config, kube.WithNamespaces(ns),
		kube.WithLogger(slog.New(recordHandler{records})), kube.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, newRecordingSink()) }()
	testkit.Eventually(ctx, t, "source synced", src.Synced)
	cancel()
	if err := testkit.Recv(t, done, "Run to return"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := src.LastError(); err != nil {
		t.Errorf("LastError() = %v, want nil", err)
	}
	if n, err := testutil.GatherAndCount(reg, "fairway_kube_watch_errors_total"); err != nil || n != 0 {
		t.Errorf("fairway_kube_watch_errors_total has %d series (%v), want none", n, err)
	}
	select {
	case r := <-records:
		t.Errorf("unexpected %v %q error=%q", r.Level, r.Message, attr(r, "error"))
	default:
	}
}
