package kube_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// netnsChildEnv marks the copy of the test binary that runs inside the
// private network namespace.
const netnsChildEnv = "FAIRWAY_KUBE_TEST_NETNS_CHILD"

// pod addresses assigned inside the private network namespace only
// (RFC 5737 documentation addresses: the apiserver rejects loopback ones).
var podAddrs = []string{"198.51.100.1", "198.51.100.2"}

// TestControlPlane_GRPCXDSClientInNetworkNamespace sends real RPCs through
// grpc-go's own xds:/// resolver to pods registered through the real API.
// Pod addresses are not loopback, so the test re-runs itself inside a new
// network namespace where it puts them on the namespace's own loopback
// device: etcd, the apiserver, the control plane, the backends and the client
// all live there, and no packet leaves it.
func TestControlPlane_GRPCXDSClientInNetworkNamespace(t *testing.T) {
	if os.Getenv(netnsChildEnv) != "1" {
		if runtime.GOOS != "linux" {
			t.Fatalf("needs Linux network namespaces (run as root); GOOS=%s", runtime.GOOS)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
		cmd.Env = append(os.Environ(), netnsChildEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		t.Logf("inside the network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("test inside a new network namespace (needs root or CAP_SYS_ADMIN): %v", err)
		}
		return
	}

	// Inside the namespace: loopback up, pod addresses on it.
	run := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("link", "set", "lo", "up")
	for _, a := range podAddrs {
		run("addr", "add", a+"/32", "dev", "lo")
	}

	env := testenv.Start(t)
	cs := newClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := newNamespace(ctx, t, cs)

	var backends []*testbackend.Backend
	for i, a := range podAddrs {
		b, err := testbackend.Start(fmt.Sprintf("%s:%d", a, targetPort), testbackend.WithName(fmt.Sprintf("pod-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
		backends = append(backends, b)
	}
	addr, _ := controlPlane(t, cs)

	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sl := slice(ns, "echo", "echo-a", ready(podAddrs[0], "zone-a"), ready(podAddrs[1], "zone-b"))
	sl, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	client := testbackend.XDSClient(t, addr, key(ns, "echo").ResourceName())
	waitServedBy(ctx, t, client, "pod-0", "pod-1")

	// pod-0 not ready: the client stops sending to it.
	sl.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitServedBy(ctx, t, client, "pod-1")
	if n := backends[1].Count(); n == 0 {
		t.Errorf("pod-1 served no RPC")
	}
}

// waitServedBy makes RPCs until a window of 20 consecutive ones is served by
// exactly the backends named.
func waitServedBy(ctx context.Context, t *testing.T, c testgrpc.TestServiceClient, names ...string) {
	t.Helper()
	want := make(map[string]bool)
	for _, n := range names {
		want[n] = true
	}
	var last map[string]int
	var lastErr error
	served := false
	defer func() {
		if !served {
			t.Logf("last window %v, last error %v", last, lastErr)
		}
	}()
	testkit.Eventually(ctx, t, fmt.Sprintf("RPCs served by exactly %v", names), func() bool {
		seen := make(map[string]int)
		ok := true
		for range 20 {
			name, err := testbackend.Call(ctx, c, 2*time.Second)
			if err != nil {
				lastErr, ok = err, false
				break
			}
			seen[name]++
			if !want[name] {
				ok = false
			}
		}
		last = seen
		return ok && len(seen) == len(want)
	})
	served = true
}
