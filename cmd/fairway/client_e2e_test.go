package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// controlPlane is a `fairway controlplane --file` run in-process.
type controlPlane struct {
	t         *testing.T
	path      string
	xdsAddr   string
	adminAddr string
	log       *testkit.LogBuffer
	stop      context.CancelFunc
	done      chan int
}

func startControlPlane(t *testing.T, path, xdsAddr string, extraArgs ...string) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, path: path, xdsAddr: xdsAddr, adminAddr: testkit.FreeAddr(t), log: newLog(t), done: make(chan int, 1)}
	ctx, stop := context.WithCancel(context.Background())
	cp.stop = stop
	go func() {
		args := append([]string{"controlplane", "--auth", "none", "--file", path, "--xds-addr", xdsAddr, "--admin-addr", cp.adminAddr, "--debounce", "10ms"}, extraArgs...)
		cp.done <- run(ctx, args, io.Discard, cp.log)
	}()
	t.Cleanup(cp.kill)
	waitReady(t, cp.adminAddr, 20*time.Second)
	return cp
}

// kill stops the control plane (as SIGTERM does) and waits for it.
func (cp *controlPlane) kill() {
	cp.stop()
	select {
	case <-cp.done:
		cp.done <- 0 // later kills return at once
	case <-time.After(10 * time.Second):
		cp.t.Error("control plane did not stop")
	}
}

func (cp *controlPlane) metrics() string {
	resp, err := http.Get("http://" + cp.adminAddr + "/metrics")
	if err != nil {
		cp.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// startPods starts bench backends (real gRPC servers) on the given IPs, all
// on one port, each with spec changes from mod.
func startPods(t *testing.T, ips []string, mod func(i int, s *backend.Spec)) ([]*backend.Backend, int) {
	t.Helper()
	for port := 41000; port < 41200; port++ {
		var pods []*backend.Backend
		for i, ip := range ips {
			s := backend.Spec{Index: i, IP: ip, Zone: "zone-a", Capacity: 16, Median: time.Millisecond, SlowFactor: 1, ColdFactor: 1}
			if mod != nil {
				mod(i, &s)
			}
			b := backend.New(s, time.Second, 120)
			if err := b.Start(port); err != nil {
				break
			}
			pods = append(pods, b)
		}
		if len(pods) == len(ips) {
			for _, p := range pods {
				t.Cleanup(p.Stop)
			}
			return pods, port
		}
		for _, p := range pods {
			p.Stop()
		}
	}
	t.Fatal("no free port for the pods")
	return nil, 0
}

// world renders the file the control plane serves: Service echo:8080 with
// one ready endpoint per IP, and extra Service annotations.
func world(port int, annotations string, ips ...string) []string {
	var eps strings.Builder
	for _, ip := range ips {
		fmt.Fprintf(&eps, "- addresses: [%q]\n  conditions: {ready: true}\n  zone: zone-a\n", ip)
	}
	svc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\n  annotations: {%s}\nspec:\n  ports:\n  - {name: grpc, port: 8080, targetPort: %d}\n", annotations, port)
	return []string{svc, fmt.Sprintf(e2eSlice, "echo", port, eps.String())}
}

func dialFairway(t *testing.T, xdsAddr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("fairway:///echo.default:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
		client.WithFairway(client.WithXDSServers(xdsAddr), client.WithZone("zone-a")))
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// load sends requests from workers goroutines until stop is closed, counting
// failures; it gives up after limit requests.
type load struct {
	wg       sync.WaitGroup
	stop     chan struct{}
	sent     atomic.Int64
	failed   atomic.Int64
	firstErr atomic.Value
}

func startLoad(ctx context.Context, cc *grpc.ClientConn, workers int, limit int64) *load {
	l := &load{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for l.sent.Load() < limit {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := backend.Call(rctx, cc)
				cancel()
				l.sent.Add(1)
				if err != nil && !backend.ErrInjected(err) {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) finish() { close(l.stop); l.wg.Wait() }

// TestClient_EndToEnd drives the Fairway client against real backends and a
// real control plane: traffic reaches every pod, a removed pod gets nothing
// new within 2 s, a control-plane outage loses no RPC, and an invalid
// strategy chain is NACKed while the previous one keeps working.
func TestClient_EndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ips := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	pods, port := startPods(t, ips, nil)
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(port, "", ips...)...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr)

	cc := dialFairway(t, xdsAddr)
	defer cc.Close()
	for i := 0; i < 300; i++ {
		if _, err := backend.Call(ctx, cc, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pods {
		if p.Received() == 0 {
			t.Fatalf("pod %s got no request of 300", ips[i])
		}
	}

	// A pod removed from the control plane gets no new RPC within 2 s.
	writeFile(t, path, world(port, "", ips[:2]...)...)
	removed := time.Now()
	var last int64 = -1
	for time.Since(removed) < 3*time.Second {
		if _, err := backend.Call(ctx, cc); err != nil {
			t.Fatal(err)
		}
		if time.Since(removed) > 2*time.Second {
			if last < 0 {
				last = pods[2].Received()
			} else if pods[2].Received() != last {
				t.Fatalf("removed pod got an RPC %v after its removal", time.Since(removed))
			}
		}
		time.Sleep(2 * time.Millisecond)
	}

	// Killing the control plane mid-load loses no RPC; the client keeps the
	// last endpoints and reconnects when it returns.
	l := startLoad(ctx, cc, 4, 20000)
	within(t, 10*time.Second, "the load to be under way", func() bool { return l.sent.Load() >= 200 }, nil)
	cp.kill()
	time.Sleep(1500 * time.Millisecond)            // the outage: the client keeps sending to the last endpoints
	writeFile(t, path, world(port, "", ips...)...) // pod 3 back, seen only after the reconnect
	before := pods[2].Received()
	cp = startControlPlane(t, path, xdsAddr)
	within(t, 30*time.Second, "the client to reconnect: pod 3 served after the control plane returned", func() bool {
		return pods[2].Received() != before
	}, nil)
	l.finish()
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d of %d RPCs failed across the control-plane outage; first: %v", n, l.sent.Load(), l.firstErr.Load())
	}
	t.Logf("%d RPCs across the outage, none failed", l.sent.Load())

	// An invalid strategy chain is NACKed; the previous one keeps working.
	writeFile(t, path, world(port, `fairway.io/strategy: '[{"no_such_strategy":{}}]'`, ips...)...)
	within(t, 10*time.Second, "a NACK of the invalid Cluster", func() bool {
		return strings.Contains(cp.metrics(), `fairway_xds_nacks_total{type="cluster"}`)
	}, nil)
	waitLog(t, cp.log, "NACK", "no_such_strategy")
	for i := 0; i < 100; i++ {
		if _, err := backend.Call(ctx, cc); err != nil {
			t.Fatalf("after the NACK: %v", err)
		}
	}
}

// TestClient_OutlierDrainsFailingPod: a pod that answers UNAVAILABLE to every
// call is drained by the default strategies while the control plane changes
// nothing.
// maxProbes is how many of 500 calls a drained pod may still get: the
// default chain's p2c re-tries an endpoint idle for a second (see below).
const maxProbes = 5

// TestClient_DefaultChainDrainsFailingPod: the default chain (latency-aware
// p2c with its failure penalty, outlier) takes a pod that fails every call
// out of rotation by itself, with no help from the control plane.
func TestClient_DefaultChainDrainsFailingPod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ips := []string{"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24", "127.0.0.25"}
	pods, port := startPods(t, ips, func(i int, s *backend.Spec) {
		if i == 0 {
			s.ErrorRate = 1
		}
	})
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(port, "", ips...)...)
	cp := startControlPlane(t, path, testkit.FreeAddr(t))
	cc := dialFairway(t, cp.xdsAddr)
	defer cc.Close()
	if _, err := backend.Call(ctx, cc, grpc.WaitForReady(true)); err != nil && !backend.ErrInjected(err) {
		t.Fatal(err)
	}
	var failed int
	for i := 0; i < 2000; i++ {
		if _, err := backend.Call(ctx, cc); err != nil {
			if !backend.ErrInjected(err) {
				t.Fatal(err)
			}
			failed++
		}
		time.Sleep(time.Millisecond)
	}
	if failed > 400 {
		t.Fatalf("%d of 2000 calls failed before the pod was drained (a fifth would mean no draining)", failed)
	}
	t.Logf("%d of 2000 calls failed before the failing pod was drained", failed)
	// Drained, the failing pod gets almost nothing. Not nothing: the
	// latency-aware p2c lets the estimate of an endpoint idle for a second
	// decay toward its peers' and tries it again (so a recovered pod gets its
	// traffic back), and outlier readmits an ejected pod after 30 s; how many
	// of those probes fall inside the next 500 calls depends on how fast the
	// machine runs them. What is guaranteed is that they stay rare.
	before := pods[0].Received()
	var late int
	for i := 0; i < 500; i++ {
		if _, err := backend.Call(ctx, cc); err != nil {
			if !backend.ErrInjected(err) {
				t.Fatal(err)
			}
			late++
		}
	}
	got := pods[0].Received() - before
	if got > maxProbes || late > maxProbes {
		t.Fatalf("after the drain the failing pod still got %d of 500 calls (%d failed), want at most %d probes", got, late, maxProbes)
	}
	t.Logf("after the drain: %d of 500 calls reached the failing pod", got)
	if m := cp.metrics(); !strings.Contains(m, "\nfairway_xds_pushes_total 1\n") {
		t.Fatalf("the control plane pushed more than its one snapshot; the drain must come from the client alone")
	}
}
