package xdsserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func backendService(name string, zones []string, backends ...*testbackend.Backend) *topology.Service {
	svc := &topology.Service{Key: key(name), Policy: topology.DefaultPolicy()}
	for i, b := range backends {
		svc.Endpoints = append(svc.Endpoints, topology.Endpoint{
			Address: b.Addr().IP.String(), Port: int32(b.Addr().Port), Zone: zones[i], Hostname: b.Name(),
			Ready: true, Serving: true, Weight: 1,
		})
	}
	topology.SortEndpoints(svc.Endpoints)
	return svc
}

// startBackend starts a test backend named name on addr until the test ends.
func startBackend(t *testing.T, addr, name string) *testbackend.Backend {
	t.Helper()
	b, err := testbackend.Start(addr, testbackend.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

func TestServer_GRPCXDSClientEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startServer(t)

	var backends []*testbackend.Backend
	for i := 1; i <= 3; i++ {
		backends = append(backends, startBackend(t, fmt.Sprintf("127.0.0.%d:0", i), fmt.Sprintf("echo-%d", i)))
	}
	other := startBackend(t, "127.0.0.4:0", "other-1")
	zones := []string{"zone-a", "zone-b", "zone-c"}
	echo := backendService("echo", zones, backends...)
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{echo, backendService("other", zones, other)})
	s.Update(snap)

	// All three backends get RPCs.
	client := testbackend.XDSClient(t, s.addr, "echo.default:8080")
	seen := map[string]int{}
	for i := 0; len(seen) < 3; i++ {
		name, err := testbackend.Call(ctx, client, 2*time.Second)
		if err != nil {
			t.Fatalf("RPC %d through xds:///echo.default:8080: %v", i, err)
		}
		seen[name]++
	}
	t.Logf("first RPCs by backend: %v", seen)

	// The FQDN name works, and so does a second service.
	for _, target := range []string{"echo.default.svc.cluster.local:8080", "other.default:8080"} {
		if _, err := testbackend.Call(ctx, testbackend.XDSClient(t, s.addr, target), 2*time.Second); err != nil {
			t.Errorf("RPC through xds:///%s: %v", target, err)
		}
	}
	if other.Count() != 1 {
		t.Errorf("other-1 served %d RPCs, want 1", other.Count())
	}

	// Remove echo-3 (it keeps running): within 2 s no RPC reaches it.
	removed := backends[2]
	s.Update(snap.With(2, time.Now(), []*topology.Service{backendService("echo", zones[:2], backends[:2]...)}, nil))
	start := time.Now()
	var lastOnRemoved time.Duration = -1
	after := 0
	for time.Since(start) < 2500*time.Millisecond {
		name, err := testbackend.Call(ctx, client, 2*time.Second)
		if err != nil {
			t.Fatalf("RPC after removing %s: %v", removed.Name(), err)
		}
		switch {
		case name == removed.Name():
			lastOnRemoved = time.Since(start)
		case time.Since(start) > 2*time.Second:
			after++
		}
	}
	t.Logf("last RPC on the removed backend %v after the update (-1: none)", lastOnRemoved)
	if lastOnRemoved >= 2*time.Second {
		t.Errorf("the removed backend still got an RPC %v after the update, want none after 2s", lastOnRemoved)
	}
	if after == 0 {
		t.Errorf("no RPC succeeded more than 2s after the update")
	}
	before := removed.Count()
	for range 20 {
		if _, err := testbackend.Call(ctx, client, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if removed.Count() != before {
		t.Errorf("removed backend served %d more RPCs", removed.Count()-before)
	}
}

// TestServer_GRPCXDSClientAcceptsEveryPolicy checks that grpc-go's xDS client
// accepts (does not NACK) the Cluster of every balancing policy translate
// produces, and routes RPCs with it.
func TestServer_GRPCXDSClientAcceptsEveryPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := startServer(t)
	b := startBackend(t, "127.0.0.1:0", "backend")
	outlier := topology.DefaultOutlier()
	slow := &topology.SlowStart{Window: 30 * time.Second, Aggression: 1.5, MinWeightPercent: 10}
	policies := map[string]topology.Policy{
		"default":   topology.DefaultPolicy(),
		"lrslow":    {LB: topology.LeastRequest, ChoiceCount: 3, SlowStart: slow, Outlier: &outlier},
		"rr":        {LB: topology.RoundRobin},
		"rrslow":    {LB: topology.RoundRobin, SlowStart: slow},
		"random":    {LB: topology.Random, Outlier: &outlier},
		"strategy":  {LB: topology.LeastRequest, ChoiceCount: 2, Strategy: `[{"p2c":{}}]`},
		"nooutlier": {LB: topology.LeastRequest, ChoiceCount: 2},
	}
	var svcs []*topology.Service
	for name, p := range policies {
		svc := backendService(name, []string{"zone-a"}, b)
		svc.Policy = p
		svcs = append(svcs, svc)
	}
	s.Update(topology.NewSnapshot(1, time.Now(), svcs))
	for name := range policies {
		t.Run(name, func(t *testing.T) {
			before := b.Count()
			if _, err := testbackend.Call(ctx, testbackend.XDSClient(t, s.addr, name+".default:8080"), 2*time.Second); err != nil {
				t.Fatalf("RPC through xds:///%s.default:8080: %v", name, err)
			}
			if b.Count() != before+1 {
				t.Errorf("backend served %d RPCs, want 1", b.Count()-before)
			}
		})
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_nacks_total", "type", "cluster"); got != 0 {
		t.Errorf("fairway_xds_nacks_total{cluster} = %v, want 0", got)
	}
}
