package main

import (
	"testing"

	"github.com/fairway-lb/fairway/internal/nodeclient"
)

// TestNodeClient_Interop drives an independent xDS client, Node.js with
// @grpc/grpc-js and @grpc/grpc-js-xds from the npm registry, against
// `fairway controlplane --file` and real backends: a Service without any
// annotation and every fairway.io/lb-policy value are accepted (no NACK) and
// spread RPCs over all endpoints, by short and FQDN name; ring_hash keeps
// the RPCs of one x-fairway-shard value on one pod; the process keeps one
// ADS stream for all of its channels; a malformed file keeps the last state
// serving; and the removal of an endpoint reaches a live channel within 3 s.
//
// grpc-js-xds falls back to RoundRobin for least_request and random, and
// applies weighted_round_robin (no ORCA reports: weights alike) and
// ring_hash itself (docs/clients.md).
func TestNodeClient_Interop(t *testing.T) {
	w := startInterop(t, []string{"127.0.0.31", "127.0.0.32", "127.0.0.33"}, []string{"127.0.0.34", "127.0.0.35"})
	node := nodeclient.Start(t, w.xdsAddr, "fairway-node-interop")
	t.Logf("node client: %v", node.Versions)

	w.wantServices(t, node)
	w.wantPolicies(t, node, lbPolicies)
	wantNoNACK(t, w.cp, "the Node client")
	w.wantLastGoodState(t, node)
	took := w.wantRemoval(t, node)
	t.Logf("file change → the Node channel stops using the removed endpoint: %v", took)
}
