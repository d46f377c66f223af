package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// worldInZones is world with endpoint i in zones[i].
func worldInZones(port int, annotations string, ips, zones []string) []string {
	var eps strings.Builder
	for i, ip := range ips {
		fmt.Fprintf(&eps, "- addresses: [%q]\n  conditions: {ready: true}\n  zone: %s\n", ip, zones[i])
	}
	return []string{world(port, annotations)[0], fmt.Sprintf(e2eSlice, "echo", port, eps.String())}
}

// TestClient_CallerAwareZoneSpill: three of four callers are in zone-a,
// which holds one of four pods. The control plane counts the callers' xDS
// streams by zone and publishes the shares with the Cluster; a zone-a
// client then keeps 35% of its requests in its zone instead of all of them
// (zone-aware routing with the default 5% capacity margin: it keeps
// 1.05 × (1/4)/(3/4)), and the zone-b client, whose zone has room, keeps
// all of its own.
func TestClient_CallerAwareZoneSpill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ips := []string{"127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34"}
	zones := []string{"zone-a", "zone-b", "zone-b", "zone-b"}
	pods, port := startPods(t, ips, func(i int, s *backend.Spec) { s.Zone = zones[i] })
	path := filepath.Join(t.TempDir(), "world.yaml")
	// The overload signals are turned off (margins of 100×) so that only
	// the capacity part spills: on a busy machine a latency blip would add
	// its own spill.
	writeFile(t, path, worldInZones(port, `fairway.io/strategy: '[{"zone_affinity":{"spill_margin":100,"latency_margin":100}},{"p2c":{}}]'`, ips, zones)...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr, "--caller-zones-warmup", "500ms", "--caller-zones-interval", "200ms")

	var ccs []*grpc.ClientConn
	for i, z := range []string{"zone-a", "zone-a", "zone-a", "zone-b"} {
		cc, err := grpc.NewClient("fairway:///echo.default:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
			client.WithFairway(client.WithXDSServers(xdsAddr), client.WithZone(z), client.WithNodeID(fmt.Sprintf("caller-%d", i))))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, err := backend.Call(ctx, cc, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
	deadline := time.Now().Add(10 * time.Second)
	var m string
	within(t, time.Until(deadline), "the control plane to count 3 zone-a and 1 zone-b callers", func() bool {
		m = cp.metrics()
		return strings.Contains(m, `fairway_xds_caller_streams{zone="zone-a"} 3`) && strings.Contains(m, `fairway_xds_caller_streams{zone="zone-b"} 1`)
	}, func() string { return "metrics:\n" + grepLines(m, "caller") })

	// localShare sends n sequential calls on cc and returns the share pod 0
	// (the only zone-a pod) received.
	localShare := func(cc *grpc.ClientConn, n int) float64 {
		before := pods[0].Received()
		for range n {
			if _, err := backend.Call(ctx, cc); err != nil {
				t.Fatal(err)
			}
		}
		return float64(pods[0].Received()-before) / float64(n)
	}
	// The shares arrive with a Cluster push once the control plane's
	// warm-up (500 ms here) is over, and take effect at the balancer's next
	// tick.
	var share float64
	within(t, time.Until(deadline), "the zone-a client to keep at most 60% of its requests in zone-a (want about 35%)", func() bool {
		share = localShare(ccs[0], 200)
		return share <= 0.6
	}, func() string {
		return fmt.Sprintf("zone-a client still keeps %.0f%% of its requests in zone-a", 100*share)
	})
	if s := localShare(ccs[0], 900); s < 0.23 || s > 0.47 {
		t.Errorf("zone-a client sent %.1f%% of 900 requests to the zone-a pod, want 35%% (23–47%%)", 100*s)
	} else {
		t.Logf("zone-a client: %.1f%% of 900 requests stayed in zone-a", 100*s)
	}
	if s := localShare(ccs[3], 300); s > 0.05 {
		t.Errorf("zone-b client sent %.1f%% of 300 requests to zone-a, want none (its zone has room)", 100*s)
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
