package xdsclient

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/keepalive"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// publish sets svc's Cluster and a one-endpoint assignment on every server.
func publish(svc, addr string, servers ...*xdstest.Server) {
	for _, s := range servers {
		_ = s.Clusters.UpdateResource(svc, makeCluster(svc, ""))
		_ = s.Endpoints.UpdateResource(svc, makeCLA(svc, addr))
	}
}

// recvAddrs waits within d for an update whose addresses are want, skipping
// others (the first server may still answer with the old one).
func recvAddrs(t *testing.T, ch <-chan Endpoints, d time.Duration, want string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(d)
	for {
		select {
		case e := <-ch:
			if got := strings.Join(addrs(e), ","); got == want {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("no update with endpoints %s within %v", want, d)
		}
	}
}

// A replica that keeps its socket open but stops answering (a proxy in front
// of it that stops forwarding) is left by keepalive: the client moves to the
// second address and gets the update published meanwhile. Before keepalive
// the client stayed on the silent connection for good.
func TestClient_LeavesAReplicaThatStopsAnswering(t *testing.T) {
	replica1, replica2 := xdstest.Start(t, "127.0.0.1:0"), xdstest.Start(t, "127.0.0.1:0")
	proxy := xdstest.StartProxy(t, replica1.Addr)
	const svc = "echo.default:80"
	publish(svc, "10.0.0.1:8080", replica1, replica2)

	reg := prometheus.NewRegistry()
	// gRPC raises Time to 10 s, its minimum: the hang is noticed after about 11 s.
	c := newTestClient(t, []string{proxy.Addr, replica2.Addr}, WithRegisterer(reg),
		WithKeepalive(keepalive.ClientParameters{Time: time.Second, Timeout: time.Second}))
	r := newRecorder()
	defer c.WatchCluster(svc, r)()
	defer c.WatchEndpoints(svc, r)()
	recvAddrs(t, r.endpoints, testkit.Timeout, "10.0.0.1:8080")
	if replica2.Streams() != 0 {
		t.Fatalf("replica 2 has %d streams before the hang, want 0 (the client starts on the first address)", replica2.Streams())
	}

	proxy.Hang()
	publish(svc, "10.0.0.2:8080", replica1, replica2)
	took := recvAddrs(t, r.endpoints, 60*time.Second, "10.0.0.2:8080")
	t.Logf("update received from replica 2 %v after replica 1 hung", took.Round(time.Millisecond))
	if got := testkit.MetricValue(t, reg, "fairway_client_xds_stream_errors_total", "reason", "unavailable"); got < 1 {
		t.Errorf("fairway_client_xds_stream_errors_total{reason=unavailable} = %v, want >= 1", got)
	}
}

// A replica that accepts connections but never answers is given up after
// the response timeout, for the next address.
func TestClient_GivesUpAStreamWithoutFirstResponse(t *testing.T) {
	replica1, replica2 := xdstest.Start(t, "127.0.0.1:0"), xdstest.Start(t, "127.0.0.1:0")
	proxy := xdstest.StartProxy(t, replica1.Addr)
	proxy.Hang()
	const svc = "echo.default:80"
	publish(svc, "10.0.0.1:8080", replica1, replica2)

	reg := prometheus.NewRegistry()
	var logs testkit.LogBuffer
	c := newTestClient(t, []string{proxy.Addr, replica2.Addr}, WithRegisterer(reg),
		WithResponseTimeout(300*time.Millisecond), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	r := newRecorder()
	defer c.WatchCluster(svc, r)()
	defer c.WatchEndpoints(svc, r)()
	recvAddrs(t, r.endpoints, testkit.Timeout, "10.0.0.1:8080")
	if got := testkit.MetricValue(t, reg, "fairway_client_xds_stream_errors_total", "reason", "no_response"); got < 1 {
		t.Errorf("fairway_client_xds_stream_errors_total{reason=no_response} = %v, want >= 1", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "did not answer") {
		t.Errorf("no warning about the silent replica in the log:\n%s", logs.String())
	}
}

// A response over the receive limit fails the stream at every attempt: it
// is logged at error level with its size and counted, and the backoff keeps
// growing instead of restarting at its base after each Cluster response.
func TestClient_ResponseOverTheLimitIsLoggedAndCounted(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	const svc = "big.default:80"
	var eps []xdstest.Endpoint
	for i := range 1000 {
		eps = append(eps, xdstest.Endpoint{Addr: fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256), Zone: "zone-a", Health: corepb.HealthStatus_HEALTHY})
	}
	_ = s.Clusters.UpdateResource(svc, makeCluster(svc, ""))
	_ = s.Endpoints.UpdateResource(svc, xdstest.CLA(svc, eps...))

	reg := prometheus.NewRegistry()
	var logs testkit.LogBuffer
	retries := make(chan int, 100)
	c := newTestClient(t, []string{s.Addr}, WithRegisterer(reg), WithMaxRecvMsgSize(10_000),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		WithBackoff(func(n int) time.Duration {
			select {
			case retries <- n:
			default:
			}
			return 10 * time.Millisecond
		}))
	r := newRecorder()
	defer c.WatchCluster(svc, r)()
	defer c.WatchEndpoints(svc, r)()
	testkit.Recv(t, r.clusters, "cluster") // the small Cluster fits
	for want := range 3 {
		if got := testkit.Recv(t, retries, "retry"); got != want {
			t.Fatalf("retry %d after an oversized response has backoff index %d, want %d\n%s", want, got, want, logs.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	testkit.Eventually(ctx, t, "an error log line with the size", func() bool {
		return strings.Contains(logs.String(), "level=ERROR") && strings.Contains(logs.String(), "size_bytes=") &&
			strings.Contains(logs.String(), "limit_bytes=10000")
	})
	if got := testkit.MetricValue(t, reg, "fairway_client_xds_stream_errors_total", "reason", "resource_exhausted"); got < 3 {
		t.Errorf("fairway_client_xds_stream_errors_total{reason=resource_exhausted} = %v, want >= 3", got)
	}
	select {
	case e := <-r.endpoints:
		t.Errorf("got %d endpoints through a %d-byte limit", len(e.Endpoints), 10_000)
	default:
	}
}
