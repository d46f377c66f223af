package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// newLog returns a log sink for a control plane run in-process; the test
// prints it when it fails.
func newLog(t *testing.T) *testkit.LogBuffer {
	log := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", log)
		}
	})
	return log
}

// within polls cond with testkit.Eventually for at most d. When cond never
// holds the test fails with what, after logging explain() (if not nil).
func within(t *testing.T, d time.Duration, what string, cond func() bool, explain func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	held := false
	if explain != nil {
		defer func() {
			if !held {
				t.Log(explain())
			}
		}()
	}
	testkit.Eventually(ctx, t, what, cond)
	held = true
}

// waitLog waits until the log holds a line containing every one of parts.
func waitLog(t *testing.T, log *testkit.LogBuffer, parts ...string) {
	t.Helper()
	within(t, 10*time.Second, fmt.Sprintf("a log line containing all of %q", parts), func() bool {
		for _, line := range strings.Split(log.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	}, nil)
}

// waitReady waits until the admin server at adminAddr answers /readyz with
// 200 (the first snapshot is served).
func waitReady(t *testing.T, adminAddr string, d time.Duration) {
	t.Helper()
	within(t, d, "the control plane to become ready", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, nil)
}

// startBackends starts one named backend per IP, all on the same port.
func startBackends(t *testing.T, ips ...string) []*testbackend.Backend {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := testbackend.Start(ips[0]+":0", testbackend.WithName("pod-"+ips[0]))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().Port
		bs := []*testbackend.Backend{first}
		for _, ip := range ips[1:] {
			b, err := testbackend.Start(fmt.Sprintf("%s:%d", ip, port), testbackend.WithName("pod-"+ip))
			if err != nil {
				break
			}
			bs = append(bs, b)
		}
		if len(bs) == len(ips) {
			for _, b := range bs {
				t.Cleanup(b.Stop)
			}
			return bs
		}
		for _, b := range bs {
			b.Stop()
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return nil
}

const e2eService = `apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
  annotations:
    fairway.io/choice-count: "%[3]s"
spec:
  ports:
  - name: grpc
    port: 8080
    targetPort: %[2]d
`

const e2eSlice = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-abc
  namespace: default
  labels:
    kubernetes.io/service-name: %[1]s
addressType: IPv4
ports:
- name: grpc
  port: %[2]d
endpoints:
%[3]s`

func e2eEndpoints(ips ...string) string {
	var b strings.Builder
	for i, ip := range ips {
		fmt.Fprintf(&b, "- addresses: [%q]\n  conditions: {ready: true}\n  zone: zone-%c\n", ip, 'a'+i)
	}
	return b.String()
}

func writeFile(t *testing.T, path string, docs ...string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestControlPlane_FileEndToEnd runs `fairway controlplane --file` and drives
// it with grpc-go's own xDS client and a raw ADS stream.
func TestControlPlane_FileEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bs := startBackends(t, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
	port := bs[0].Addr().Port
	dir := t.TempDir()
	path := filepath.Join(dir, "world.yaml")
	orphan := fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: stray, namespace: default}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: ["127.0.0.9"]}]`, port)
	good := []string{
		fmt.Sprintf(e2eService, "echo", port, "banana"),
		fmt.Sprintf(e2eSlice, "echo", port, e2eEndpoints("127.0.0.1", "127.0.0.2", "127.0.0.3")),
		fmt.Sprintf(e2eService, "other", port, "2"),
		fmt.Sprintf(e2eSlice, "other", port, e2eEndpoints("127.0.0.4")),
		orphan,
	}
	writeFile(t, path, good...)

	xdsAddr, adminAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	log := newLog(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"controlplane", "--auth", "none", "--file", path, "--xds-addr", xdsAddr, "--admin-addr", adminAddr, "--debounce", "10ms"}, &bytes.Buffer{}, log)
	}()
	defer func() {
		stop()
	}()

	// Ready once the first snapshot is served.
	deadline, _ := ctx.Deadline()
	waitReady(t, adminAddr, time.Until(deadline))

	// Bad input is reported, the rest is served.
	waitLog(t, log, "fairway.io/choice-count", "banana")
	waitLog(t, log, "stray", "kubernetes.io/service-name")

	// grpc-go's xDS client reaches all three pods of echo, also by FQDN.
	for _, target := range []string{"echo.default:8080", "echo.default.svc.cluster.local:8080"} {
		c := testbackend.XDSClient(t, xdsAddr, target)
		seen := map[string]bool{}
		for i := 0; i < 300 && len(seen) < 3; i++ {
			name, err := testbackend.Call(ctx, c, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			seen[name] = true
		}
		if len(seen) != 3 || seen["pod-127.0.0.4"] {
			t.Fatalf("%s: reached %v, want the three pods of echo", target, seen)
		}
	}

	// One raw ADS stream carries both services; an unknown name is logged
	// and does not disturb the others.
	ads := rawADS(ctx, t, xdsAddr)
	if err := ads.Send(&discoverypb.DiscoveryRequest{
		Node:          &corepb.Node{Id: "raw"},
		TypeUrl:       resource.EndpointType,
		ResourceNames: []string{"echo.default:8080", "other.default:8080", "nosuch.default:8080"},
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for len(got) < 2 {
		resp, err := ads.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetResources() {
			var cla endpointpb.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, l := range cla.GetEndpoints() {
				n += len(l.GetLbEndpoints())
			}
			got[cla.GetClusterName()] = n
		}
	}
	if got["echo.default:8080"] != 3 || got["other.default:8080"] != 1 || len(got) != 2 {
		t.Fatalf("one ADS stream got %v, want echo with 3 endpoints and other with 1", got)
	}
	waitLog(t, log, "nosuch.default:8080")

	// A malformed file is reported and the last good state keeps serving.
	writeFile(t, path, append(good[:len(good):len(good)], "kind: [unclosed")...)
	waitLog(t, log, "level=ERROR", "rejecting the file", "document 6", "component=fairway/file")
	c := testbackend.XDSClient(t, xdsAddr, "echo.default:8080")
	if _, err := testbackend.Call(ctx, c, 5*time.Second); err != nil {
		t.Fatalf("after a malformed file: %v", err)
	}

	// Removing a pod from the file: within 2 s no RPC reaches it.
	good[1] = fmt.Sprintf(e2eSlice, "echo", port, e2eEndpoints("127.0.0.1", "127.0.0.2"))
	writeFile(t, path, good...)
	removed := time.Now()
	var last int64 = -1
	lastCount, lastServed := bs[2].Count(), time.Duration(0)
	for time.Since(removed) < 3*time.Second {
		if _, err := testbackend.Call(ctx, c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if n := bs[2].Count(); n != lastCount {
			lastCount, lastServed = n, time.Since(removed)
		}
		if time.Since(removed) > 2*time.Second {
			if last < 0 {
				last = bs[2].Count()
			} else if n := bs[2].Count(); n != last {
				t.Fatalf("removed pod still got RPCs %v after the file changed", time.Since(removed))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("file change → removed pod's last RPC: %v", lastServed)

	// The bad input shows in the metrics too.
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`fairway_source_problems_total{reason="InvalidAnnotation",source="file"}`,
		`fairway_source_problems_total{reason="MissingServiceLabel",source="file"}`,
		`fairway_source_problems_total{reason="MalformedFile",source="file"} 1`,
		`fairway_xds_unknown_resource_requests_total{type="endpoint"} 1`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGINT-like shutdown: run returns 0.
	stop()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("controlplane exited %d; log:\n%s", code, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("controlplane did not stop")
	}
}

func TestControlPlane_RejectsNegativeLimits(t *testing.T) {
	for _, flag := range []string{"--max-streams-per-connection", "--max-streams-per-node", "--max-names-per-stream", "--caller-zones-interval"} {
		value := "-1"
		if flag == "--caller-zones-interval" {
			value = "-1s"
		}
		err := runControlPlane(context.Background(), []string{"--auth", "none", "--file", "world.yaml", flag, value}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), flag+" must not be negative") {
			t.Errorf("%s %s: error %v, want %q", flag, value, err, flag+" must not be negative")
		}
	}
}
