package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/interopclient"
	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// lbPolicies are the values of fairway.io/lb-policy; each gets a Service
// lb-<value> in interopWorld.
var lbPolicies = []string{"least_request", "round_robin", "random", "weighted_round_robin", "ring_hash"}

const interopService = `apiVersion: v1
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

// interopWorld renders the file of an interop test: Services echo (on
// echoIPs) and other (on otherIPs) without any annotation, and one Service
// lb-<value> per fairway.io/lb-policy value on echoIPs.
func interopWorld(port int, echoIPs, otherIPs []string) []string {
	docs := []string{
		fmt.Sprintf(interopService, "echo", port, ""),
		fmt.Sprintf(e2eSlice, "echo", port, e2eEndpoints(echoIPs...)),
		fmt.Sprintf(interopService, "other", port, ""),
		fmt.Sprintf(e2eSlice, "other", port, e2eEndpoints(otherIPs...)),
	}
	for _, p := range lbPolicies {
		name := lbPolicyService(p)
		docs = append(docs,
			fmt.Sprintf(interopService, name, port, "fairway.io/lb-policy: "+p),
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

// wantSpread makes batches of RPCs from c to target until every one of
// pods has served one (a channel's first RPCs may all go to the endpoint
// that connected first), at most 10 batches of 30. It fails the test on any
// failed RPC, any backend outside pods, or a pod that never serves.
func wantSpread(t *testing.T, c *interopclient.Client, target string, pods []string) {
	t.Helper()
	seen := map[string]int{}
	for batch := 0; batch < 10 && len(seen) < len(pods); batch++ {
		r := c.Calls(target, 30)
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

// wantStickyFrom checks, on c's ring_hash channel to target, that the RPCs
// carrying the same value of x-fairway-shard all reach one pod, and that 20
// different values reach more than one pod.
func wantStickyFrom(t *testing.T, c *interopclient.Client, target string) {
	t.Helper()
	spread := map[string]int{}
	for i := range 20 {
		md := map[string]string{"x-fairway-shard": fmt.Sprintf("shard-%d", i)}
		r := c.CallsWithMetadata(target, 3, md)
		if len(r.Errors) > 0 {
			t.Fatalf("%s with %v: %s", target, md, r.Errors[0])
		}
		if got := r.Counts(); len(got) != 1 {
			t.Fatalf("%s with %v reached %v, want one pod", target, md, got)
		}
		spread[r.Served[0]]++
	}
	if len(spread) < 2 {
		t.Fatalf("%s: 20 values of x-fairway-shard all reached %v, want more than one pod", target, spread)
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

// wantNoNACK fails the test if any client NACKed a resource of cp.
func wantNoNACK(t *testing.T, cp *controlPlane, who string) {
	t.Helper()
	if m := cp.metrics(); metricSum(t, m, "fairway_xds_nacks_total") != 0 {
		t.Fatalf("%s NACKed; metrics:\n%s\nlog:\n%s", who, grepLines(m, "nacks"), grepLines(cp.log.String(), "NACK"))
	}
}

// interop is an interop test's world: `fairway controlplane --file` serving
// interopWorld, with a real backend on each of echoIPs and otherIPs.
type interop struct {
	cp          *controlPlane
	path        string
	port        int
	echoIPs     []string
	otherIPs    []string
	echo, other []string // pod names
	backends    []*testbackend.Backend
	good        []string // the documents of the file
	xdsAddr     string
}

// startInterop starts the backends and the control plane of an interop test.
func startInterop(t *testing.T, echoIPs, otherIPs []string) *interop {
	t.Helper()
	bs := startBackends(t, append(slices.Clone(echoIPs), otherIPs...)...)
	w := &interop{path: filepath.Join(t.TempDir(), "world.yaml"), port: bs[0].Addr().Port,
		echoIPs: echoIPs, otherIPs: otherIPs, echo: podNames(echoIPs), other: podNames(otherIPs),
		backends: bs, xdsAddr: testkit.FreeAddr(t)}
	w.good = interopWorld(w.port, echoIPs, otherIPs)
	writeFile(t, w.path, w.good...)
	w.cp = startControlPlane(t, w.path, w.xdsAddr)
	return w
}

// wantServices checks that c reaches every endpoint of a Service without
// annotations, of a second one, and of the first by its FQDN name, and that
// the control plane saw one ADS stream for all of them.
func (w *interop) wantServices(t *testing.T, c *interopclient.Client) {
	t.Helper()
	wantSpread(t, c, "echo.default:8080", w.echo)
	wantSpread(t, c, "other.default:8080", w.other)
	wantSpread(t, c, "echo.default.svc.cluster.local:8080", w.echo)
	for _, typ := range []string{"listener", "cluster", "endpoint"} {
		if want := fmt.Sprintf(`fairway_xds_streams{protocol="sotw",type=%q} 1`, typ); !strings.Contains(w.cp.metrics(), want) {
			t.Errorf("want one ADS stream for every channel of the client process (%s); metrics:\n%s", want, grepLines(w.cp.metrics(), "fairway_xds_streams"))
		}
	}
}

// wantPolicies checks that c reaches every endpoint of the Service of each
// fairway.io/lb-policy value in policies, and, when policies holds
// ring_hash, that ring_hash sends the RPCs of one x-fairway-shard value to
// one pod.
func (w *interop) wantPolicies(t *testing.T, c *interopclient.Client, policies []string) {
	t.Helper()
	for _, p := range policies {
		wantSpread(t, c, lbPolicyService(p)+".default:8080", w.echo)
	}
	if slices.Contains(policies, "ring_hash") {
		wantStickyFrom(t, c, lbPolicyService("ring_hash")+".default:8080")
	}
}

// wantLastGoodState writes a malformed file and checks that c's live
// channel, and a channel to a name it has not asked for yet, keep getting
// the last good state.
func (w *interop) wantLastGoodState(t *testing.T, c *interopclient.Client) {
	t.Helper()
	writeFile(t, w.path, append(slices.Clone(w.good), "kind: [unclosed")...)
	waitLog(t, w.cp.log, "level=ERROR", "rejecting the file")
	wantSpread(t, c, "echo.default:8080", w.echo)
	wantSpread(t, c, "other.default.svc.cluster.local:8080", w.other)
}

// wantRemoval removes echo's last endpoint from the file and checks that c's
// live channel stops using it within 3 s, and then never uses it again. It
// returns how long that took.
func (w *interop) wantRemoval(t *testing.T, c *interopclient.Client) time.Duration {
	t.Helper()
	last := len(w.echoIPs) - 1
	writeFile(t, w.path, interopWorld(w.port, w.echoIPs[:last], w.otherIPs)...)
	removed := time.Now()
	removedPod := w.backends[last]
	// Gone once three batches in a row miss it: one batch of 6 can miss a
	// pod by chance (C-core's legacy policy picks localities by weight), so
	// one clean batch does not prove the update arrived.
	var took time.Duration
	for clean := 0; clean < 3; {
		r := c.Calls("echo.default:8080", 6)
		if len(r.Errors) > 0 {
			t.Fatalf("echo while removing an endpoint: %s", r.Errors[0])
		}
		switch {
		case r.Counts()[removedPod.Name()] > 0:
			clean = 0
		case clean == 0:
			took, clean = time.Since(removed), 1
		default:
			clean++
		}
		if clean == 0 && time.Since(removed) > 3*time.Second {
			t.Fatalf("%s still gets RPCs %v after it left the file", removedPod.Name(), time.Since(removed))
		}
		if clean == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	before := removedPod.Count()
	wantSpread(t, c, "echo.default:8080", w.echo[:last])
	if n := removedPod.Count(); n != before {
		t.Fatalf("%s got %d more RPCs after it left the file", removedPod.Name(), n-before)
	}
	return took
}
