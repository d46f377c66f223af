package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/fairway-lb/fairway/client/xdsclient"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestControlPlane_RejectsBadLimitFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--max-connection-age", "-1s"}, {"--max-connection-age-grace", "-1s"}, {"--keepalive-time", "-1s"},
		{"--keepalive-timeout", "-1s"}, {"--push-timeout", "-1s"}, {"--max-send-msg-size", "0"},
		{"--default-export-to", "shop"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), append([]string{"controlplane", "--auth", "none", "--file", "unused.yaml"}, args...), io.Discard, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), args[0]) {
			t.Errorf("fairway controlplane %s: exit code %d, stderr %q; want 1 and a message naming the flag", strings.Join(args, " "), code, stderr.String())
		}
	}
}

// The limit flags reach the xDS server: a connection older than
// --max-connection-age (plus its grace) is closed, and every response is
// over a --response-size-warning of 1 byte.
func TestControlPlane_LimitFlagsReachTheServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(8080, "", "127.0.0.21")...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr, "--response-size-warning=1", "--max-connection-age=200ms", "--max-connection-age-grace=100ms")

	c, err := xdsclient.New([]string{xdsAddr}, &corepb.Node{Id: "limits"},
		xdsclient.WithBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := endpointsRecorder{endpoints: make(chan xdsclient.Endpoints, 10), errs: make(chan error, 10)}
	defer c.WatchEndpoints("echo.default:8080", w)()
	testkit.Recv(t, w.endpoints, "the endpoints")
	if err := testkit.RecvWithin(t, w.errs, 10*time.Second, "the stream's end at its age"); !errors.Is(err, xdsclient.ErrDisconnected) {
		t.Errorf("watcher error %v, want one wrapping ErrDisconnected", err)
	}
	waitLog(t, cp.log, "level=WARN", "large xDS response", "type=endpoint")
	if m := cp.metrics(); !strings.Contains(m, `fairway_xds_large_responses_total{limit="warning",protocol="sotw",type="endpoint"}`) {
		t.Errorf("no large-response count for the endpoints in /metrics:\n%s", m)
	}
}

// endpointsRecorder is an xdsclient.EndpointsWatcher that hands over what
// it gets, dropping what does not fit in its buffers (it never blocks the
// client's callbacks).
type endpointsRecorder struct {
	endpoints chan xdsclient.Endpoints
	errs      chan error
}

func (r endpointsRecorder) OnEndpoints(e xdsclient.Endpoints) {
	select {
	case r.endpoints <- e:
	default:
	}
}

func (r endpointsRecorder) OnError(err error) {
	select {
	case r.errs <- err:
	default:
	}
}
