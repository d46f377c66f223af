package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/nodeclient"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// nodeLBPolicies are the values of fairway.io/lb-policy; each gets a Service
// lb-<value> in nodeWorld.
var nodeLBPolicies = []string{"least_request", "round_robin", "random", "weighted_round_robin", "ring_hash"}

const nodeService = `apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
  annotations: {%[3]s}
spec:
  ports:
  - name: grpc
    port: 8080
    targetPort: %[2]d
`

// nodeWorld renders the file of the Node interop test: Services echo (on
// echoIPs) and other (on otherIPs) without any annotation, and one Service
// lb-<value> per fairway.io/lb-policy value on echoIPs.
func nodeWorld(port int, echoIPs, otherIPs []string) []string {
	docs := []string{
		fmt.Sprintf(nodeService, "echo", port, ""),
		fmt.Sprintf(e2eSlice, "echo", port, e2eEndpoints(echoIPs...)),
		fmt.Sprintf(nodeService, "other", port, ""),
		fmt.Sprintf(e2eSlice, "other", port, e2eEndpoints(otherIPs...)),
	}
	for _, p := range nodeLBPolicies {
		name := lbPolicyService(p)
		docs = append(docs,
			fmt.Sprintf(nodeService, name, port, "fairway.io/lb-policy: "+p),
			fmt.Sprintf(e2eSlice, name, port, e2eEndpoints(echoIPs...)))
	}
	return docs
}

func lbPolicyService(policy string) string { return "lb-" + strings.ReplaceAll(policy, "_", "-") }

func podNames(ips []string) []string {
	names := make([]string, len(ips))
	for i, ip := range ips {
		names[i] = "pod-" + ip
	}
	return names
}

// wantSpread makes batches of RPCs from node to target until every one of
// pods has served one (a channel's first RPCs may all go to the endpoint
// that connected first), at most 10 batches of 30. It fails the test on any
// failed RPC, any backend outside pods, or a pod that never serves.
func wantSpread(t *testing.T, node *nodeclient.Client, target string, pods []string) {
	t.Helper()
	seen := map[string]int{}
	for batch := 0; batch < 10 && len(seen) < len(pods); batch++ {
		r := node.Calls(target, 30)
		if len(r.Errors) > 0 {
			t.Fatalf("%s: %d of %d RPCs failed, first: %s", target, len(r.Errors), len(r.Errors)+len(r.Served), r.Errors[0])
		}
		for b, n := range r.Counts() {
			if !slices.Contains(pods, b) {
				t.Fatalf("%s: an RPC reached %s, want only %v", target, b, pods)
			}
			seen[b] += n
		}
	}
	if len(seen) < len(pods) {
		t.Fatalf("%s: RPCs reached %v, want every one of %v", target, seen, pods)
	}
}

// metricSum is the sum of every sample of the metric name in a Prometheus
// text exposition.
func metricSum(t *testing.T, text, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestNodeClient_Interop drives an independent xDS client, Node.js with
// @grpc/grpc-js and @grpc/grpc-js-xds from the npm registry, against
// `fairway controlplane --file` and real backends: a Service without any
// annotation and every fairway.io/lb-policy value are accepted (no NACK) and
// spread RPCs over all endpoints, by short and FQDN name; the process keeps
// one ADS stream for all of its channels; a malformed file keeps the last
// state serving; and the removal of an endpoint reaches a live channel
// within 3 s.
func TestNodeClient_Interop(t *testing.T) {
	echoIPs := []string{"127.0.0.31", "127.0.0.32", "127.0.0.33"}
	otherIPs := []string{"127.0.0.34", "127.0.0.35"}
	bs := startBackends(t, append(slices.Clone(echoIPs), otherIPs...)...)
	port := bs[0].Addr().Port
	path := filepath.Join(t.TempDir(), "world.yaml")
	good := nodeWorld(port, echoIPs, otherIPs)
	writeFile(t, path, good...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr)

	node := nodeclient.Start(t, xdsAddr, "fairway-node-interop")
	t.Logf("node client: %v", node.Versions)
	echo, other := podNames(echoIPs), podNames(otherIPs)

	// A Service without annotations, then a second one on the same channel
	// set, then the first by its FQDN name.
	wantSpread(t, node, "echo.default:8080", echo)
	wantSpread(t, node, "other.default:8080", other)
	wantSpread(t, node, "echo.default.svc.cluster.local:8080", echo)
	for _, typ := range []string{"listener", "cluster", "endpoint"} {
		if want := fmt.Sprintf(`fairway_xds_streams{protocol="sotw",type=%q} 1`, typ); !strings.Contains(cp.metrics(), want) {
			t.Errorf("want one ADS stream for every channel of the Node process (%s); metrics:\n%s", want, grepLines(cp.metrics(), "fairway_xds_streams"))
		}
	}

	// Every fairway.io/lb-policy value: grpc-js-xds falls back to RoundRobin
	// for least_request and random, and applies weighted_round_robin (no ORCA
	// reports: weights alike) and ring_hash (no hash header here: a random
	// hash per RPC) itself (docs/clients.md).
	for _, p := range nodeLBPolicies {
		target := lbPolicyService(p) + ".default:8080"
		wantSpread(t, node, target, echo)
	}
	if m := cp.metrics(); metricSum(t, m, "fairway_xds_nacks_total") != 0 {
		t.Fatalf("the Node client NACKed; metrics:\n%s\nlog:\n%s", grepLines(m, "nacks"), grepLines(cp.log.String(), "NACK"))
	}

	// A malformed file is rejected; the live channel and a new one (a name
	// not yet subscribed) keep getting the last good state.
	writeFile(t, path, append(slices.Clone(good), "kind: [unclosed")...)
	waitLog(t, cp.log, "level=ERROR", "rejecting the file")
	wantSpread(t, node, "echo.default:8080", echo)
	wantSpread(t, node, "other.default.svc.cluster.local:8080", other)

	// Removing an endpoint from the file reaches the live channel within 3 s.
	writeFile(t, path, nodeWorld(port, echoIPs[:2], otherIPs)...)
	removed := time.Now()
	removedPod := bs[2]
	for {
		r := node.Calls("echo.default:8080", 6)
		if len(r.Errors) > 0 {
			t.Fatalf("echo while removing an endpoint: %s", r.Errors[0])
		}
		if r.Counts()[removedPod.Name()] == 0 {
			break
		}
		if time.Since(removed) > 3*time.Second {
			t.Fatalf("%s still gets RPCs %v after it left the file", removedPod.Name(), time.Since(removed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("file change → the Node channel stops using the removed endpoint: %v", time.Since(removed))
	before := removedPod.Count()
	wantSpread(t, node, "echo.default:8080", echo[:2])
	if n := removedPod.Count(); n != before {
		t.Fatalf("%s got %d more RPCs after it left the file", removedPod.Name(), n-before)
	}
}
