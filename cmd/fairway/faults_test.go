//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"

	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// rpc is one RPC made by a steadyLoad.
type rpc struct {
	start, end time.Time
	backend    string // the x-backend response header ("" without one)
	addr       string // the address the RPC was sent to ("" if it never was)
	err        error
}

// steadyLoad makes fail-fast RPCs (no WaitForReady: an RPC with no endpoint
// to go to fails at once) from a few goroutines, each pausing 1 ms between
// RPCs, and records every one. Each worker stops after maxRPCsPerWorker.
type steadyLoad struct {
	name string
	stop chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	rpcs []rpc // guarded by mu
}

const maxRPCsPerWorker = 50000

func startSteadyLoad(ctx context.Context, name string, c testgrpc.TestServiceClient, workers int) *steadyLoad {
	l := &steadyLoad{name: name, stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for i := 0; i < maxRPCsPerWorker; i++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(time.Millisecond):
				}
				r := callOnce(ctx, c)
				l.mu.Lock()
				l.rpcs = append(l.rpcs, r)
				l.mu.Unlock()
			}
		})
	}
	return l
}

func callOnce(ctx context.Context, c testgrpc.TestServiceClient) rpc {
	var hdr metadata.MD
	var p peer.Peer
	r := rpc{start: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, r.err = c.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr), grpc.Peer(&p))
	r.end = time.Now()
	if v := hdr.Get(testbackend.HeaderName); len(v) == 1 {
		r.backend = v[0]
	}
	if p.Addr != nil {
		r.addr = p.Addr.String()
	}
	return r
}

func (l *steadyLoad) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// where returns the recorded RPCs for which keep holds.
func (l *steadyLoad) where(keep func(rpc) bool) []rpc {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rpc
	for _, r := range l.rpcs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// startedAfter counts the RPCs started at or after t.
func (l *steadyLoad) startedAfter(t time.Time) int {
	return len(l.where(func(r rpc) bool { return !r.start.Before(t) }))
}

// waitProgress waits at most d until every load has started n RPCs since t.
func waitProgress(t *testing.T, d time.Duration, since time.Time, n int, what string, loads ...*steadyLoad) {
	t.Helper()
	within(t, d, fmt.Sprintf("%d RPCs from every client %s", n, what), func() bool {
		for _, l := range loads {
			if l.startedAfter(since) < n {
				return false
			}
		}
		return true
	}, nil)
}

func failed(r rpc) bool { return r.err != nil }

// TestFault_ControlPlaneKilledUnderLoad SIGKILLs the real `fairway
// controlplane --file` process under steady RPC load from a Fairway client
// (fairway:///) and grpc-go's proxyless xDS client (xds:///), keeps it away
// for 2 s, and starts it again on the same address: no RPC may fail (the
// clients keep their last endpoints, and the load is fail-fast, so a client
// left without endpoints fails RPCs at once), and a pod added after the
// restart must then get RPCs from both clients.
func TestFault_ControlPlaneKilledUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ips := []string{"127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"}
	port := startBackends(t, ips...)[0].Addr().Port
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(port, "", ips[:3]...)...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlaneProcess(t, path, xdsAddr)

	fw := dialFairway(t, xdsAddr)
	defer fw.Close()
	clients := []struct {
		name string
		c    testgrpc.TestServiceClient
	}{
		{"fairway:///", testgrpc.NewTestServiceClient(fw)},
		{"xds:///", testbackend.XDSClient(t, xdsAddr, "echo.default:8080")},
	}
	var loads []*steadyLoad
	for _, c := range clients {
		if _, err := testbackend.Call(ctx, c.c, 10*time.Second); err != nil {
			t.Fatalf("%s: first RPC: %v", c.name, err)
		}
		l := startSteadyLoad(ctx, c.name, c.c, 4)
		defer l.finish()
		loads = append(loads, l)
	}
	start := time.Now()
	waitProgress(t, 10*time.Second, start, 200, "before the kill", loads...)

	cp.kill()
	killed := time.Now()
	// The outage lasts 2 s, long enough for both clients to see their ADS
	// stream break and fail to reconnect at least once (their first
	// backoffs are 0.2 s and 1 s); RPCs must keep flowing all along.
	outage := time.NewTimer(2 * time.Second)
	waitProgress(t, 10*time.Second, killed, 300, "while the control plane is down", loads...)
	<-outage.C
	startControlPlaneProcess(t, path, xdsAddr)
	restarted := time.Now()

	newPod := "pod-" + ips[3]
	writeFile(t, path, world(port, "", ips...)...)
	within(t, 30*time.Second, "both clients to send RPCs to the pod added after the restart", func() bool {
		for _, l := range loads {
			if len(l.where(func(r rpc) bool { return r.backend == newPod })) == 0 {
				return false
			}
		}
		return true
	}, nil)
	for _, l := range loads {
		l.finish()
		first := l.where(func(r rpc) bool { return r.backend == newPod })[0].end.Sub(restarted)
		during := len(l.where(func(r rpc) bool { return r.start.After(killed) && r.start.Before(restarted) }))
		if bad := l.where(failed); len(bad) > 0 {
			t.Errorf("%s: %d of %d RPCs failed; first, %v after the kill: %v",
				l.name, len(bad), len(l.where(func(rpc) bool { return true })), bad[0].start.Sub(killed), bad[0].err)
			continue
		}
		t.Logf("%s: %d RPCs, none failed; %d while the control plane was down; the added pod served %v after the restart",
			l.name, len(l.where(func(rpc) bool { return true })), during, first.Round(time.Millisecond))
	}
}

// connWatch is a client stats.Handler that records when the client's first
// connection to each address ended.
type connWatch struct {
	mu    sync.Mutex
	ended map[string]time.Time // guarded by mu
}

type connAddrKey struct{}

func (w *connWatch) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connAddrKey{}, info.RemoteAddr.String())
}

func (w *connWatch) HandleConn(ctx context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); !ok {
		return
	}
	addr, _ := ctx.Value(connAddrKey{}).(string)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, seen := w.ended[addr]; !seen {
		w.ended[addr] = time.Now()
	}
}

func (w *connWatch) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (w *connWatch) HandleRPC(context.Context, stats.RPCStats)                       {}

func (w *connWatch) endedAt(addr string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.ended[addr]
	return at, ok
}

// TestFault_BackendKilledUnderLoad SIGKILLs one of three backend processes
// under load from a Fairway client (each RPC takes 5 ms, so several are in
// flight on each pod). The only RPCs allowed to fail are those in flight on
// the killed pod when it died: sent to it, started before the client saw
// its connection end, and not finished before the kill. The client must
// see the connection end within 5 s, and of at least 1,000 RPCs started
// after that none may fail or go to the dead pod. The control plane keeps
// serving the dead pod: taking it out is up to the client.
func TestFault_BackendKilledUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ips := []string{"127.0.0.61", "127.0.0.62", "127.0.0.63"}
	pods, port := startBackendProcesses(t, ips, 5*time.Millisecond)
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(port, "", ips...)...)
	cp := startControlPlane(t, path, testkit.FreeAddr(t))
	watch := &connWatch{ended: make(map[string]time.Time)}
	cc, err := grpc.NewClient("fairway:///echo.default:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(watch), client.WithFairway(client.WithXDSServers(cp.xdsAddr), client.WithZone("zone-a")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	if _, err := testbackend.Call(ctx, c, 10*time.Second); err != nil {
		t.Fatalf("first RPC: %v", err)
	}
	l := startSteadyLoad(ctx, "fairway:///", c, 8)
	defer l.finish()
	within(t, 10*time.Second, "every pod to serve 50 RPCs", func() bool {
		for _, ip := range ips {
			if len(l.where(func(r rpc) bool { return r.backend == "pod-"+ip })) < 50 {
				return false
			}
		}
		return true
	}, nil)

	victim := net.JoinHostPort(ips[0], fmt.Sprint(port))
	killed := time.Now()
	pods[0].kill()
	var died time.Time
	within(t, 5*time.Second, "the client to see its connection to the killed pod end", func() bool {
		var ok bool
		died, ok = watch.endedAt(victim)
		return ok
	}, nil)
	waitProgress(t, 20*time.Second, died, 1000, "after the client saw the pod die", l)
	l.finish()

	inFlight := l.where(func(r rpc) bool { return r.addr == victim && r.start.Before(died) && !r.end.Before(killed) })
	bad := l.where(func(r rpc) bool {
		return failed(r) && !(r.addr == victim && r.start.Before(died) && !r.end.Before(killed))
	})
	for i, r := range bad {
		if i == 5 {
			t.Errorf("... %d more", len(bad)-i)
			break
		}
		t.Errorf("an RPC not in flight on the killed pod failed: sent to %q, started %v after the kill: %v", r.addr, r.start.Sub(killed), r.err)
	}
	after := l.where(func(r rpc) bool { return !r.start.Before(died) })
	if toVictim := len(l.where(func(r rpc) bool { return !r.start.Before(died) && r.addr == victim })); toVictim > 0 {
		t.Errorf("%d of the %d RPCs started after the client saw the pod die were sent to it", toVictim, len(after))
	}
	t.Logf("%d RPCs; the client saw the pod die %v after SIGKILL; %d RPCs were in flight on it, %d failed; %d RPCs after, %d failed",
		len(l.where(func(rpc) bool { return true })), died.Sub(killed).Round(time.Microsecond), len(inFlight),
		len(l.where(failed)), len(after), len(l.where(func(r rpc) bool { return failed(r) && !r.start.Before(died) })))
}
