package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// callsBy makes n RPCs from c, each carrying the header key: value when key
// is not empty, and counts them by the pod that served them.
func callsBy(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient, key, value string, n int) map[string]int {
	t.Helper()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, key, value)
	}
	got := map[string]int{}
	for range n {
		pod, err := testbackend.Call(ctx, c, 5*time.Second)
		if err != nil {
			t.Fatalf("RPC with %s=%q: %v", key, value, err)
		}
		got[pod]++
	}
	return got
}

// wantSticky checks, on a ring_hash channel c, that the RPCs carrying the
// same value of header all reach one pod, and that 20 different values
// reach more than one pod. It returns the pods the values reached.
func wantSticky(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient, header string) map[string]int {
	t.Helper()
	spread := map[string]int{}
	for i := range 20 {
		value := fmt.Sprintf("shard-%d", i)
		got := callsBy(ctx, t, c, header, value, 10)
		if len(got) != 1 {
			t.Fatalf("%s=%q reached %v, want one pod", header, value, got)
		}
		for pod := range got {
			spread[pod]++
		}
	}
	if len(spread) < 2 {
		t.Fatalf("20 values of %s all reached %v, want more than one pod", header, spread)
	}
	return spread
}

// TestControlPlane_RingHashAndWeightedRoundRobin drives grpc-go's own xDS
// client (xds:///) against `fairway controlplane --file` and real backends:
// with fairway.io/lb-policy: ring_hash the RPCs carrying the same
// x-fairway-shard value (or the header fairway.io/hash-header names) land on
// the same pod and different values spread over several pods; an invalid
// fairway.io/hash-header is reported and the default header kept; with
// weighted_round_robin the Cluster is accepted and RPCs reach every pod (the
// backends send no ORCA load reports, so grpc-go's weighted round robin
// weighs them alike: this checks acceptance and spread, not weighting). No
// Cluster is NACKed.
func TestControlPlane_RingHashAndWeightedRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ips := []string{"127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"}
	bs := startBackends(t, ips...)
	port := bs[0].Addr().Port
	var docs []string
	for name, annotations := range map[string]string{
		"shard":   `fairway.io/lb-policy: ring_hash`,
		"tenant":  `fairway.io/lb-policy: ring_hash, fairway.io/hash-header: x-tenant`,
		"badhash": `fairway.io/lb-policy: ring_hash, fairway.io/hash-header: X-Bad`,
		"wrr":     `fairway.io/lb-policy: weighted_round_robin`,
	} {
		docs = append(docs,
			fmt.Sprintf(interopService, name, port, annotations),
			fmt.Sprintf(e2eSlice, name, port, e2eEndpoints(ips...)))
	}
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, docs...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr)
	waitLog(t, cp.log, "fairway.io/hash-header", "X-Bad")

	shard := testbackend.XDSClient(t, xdsAddr, "shard.default:8080")
	t.Logf("ring_hash, x-fairway-shard: 20 values over pods %v", wantSticky(ctx, t, shard, "x-fairway-shard"))
	bad := testbackend.XDSClient(t, xdsAddr, "badhash.default.svc.cluster.local:8080")
	wantSticky(ctx, t, bad, "x-fairway-shard")

	// The annotation names the header: x-tenant pins, x-fairway-shard no
	// longer does (a request without the hashed header gets a random hash).
	tenant := testbackend.XDSClient(t, xdsAddr, "tenant.default:8080")
	wantSticky(ctx, t, tenant, "x-tenant")
	if got := callsBy(ctx, t, tenant, "x-fairway-shard", "shard-1", 60); len(got) < 2 {
		t.Errorf("tenant: 60 RPCs with only x-fairway-shard reached %v, want random pods", got)
	}

	wrr := testbackend.XDSClient(t, xdsAddr, "wrr.default:8080")
	seen := map[string]int{}
	for i := 0; i < 20 && len(seen) < len(ips); i++ {
		for pod, n := range callsBy(ctx, t, wrr, "", "", 20) {
			seen[pod] += n
		}
	}
	if want := podNames(ips); !slices.Equal(slices.Sorted(maps.Keys(seen)), want) {
		t.Errorf("weighted_round_robin: RPCs reached %v, want every one of %v", seen, want)
	}

	if m := cp.metrics(); metricSum(t, m, "fairway_xds_nacks_total") != 0 {
		t.Fatalf("grpc-go NACKed; metrics:\n%s\nlog:\n%s", grepLines(m, "nacks"), grepLines(cp.log.String(), "NACK"))
	}
}
