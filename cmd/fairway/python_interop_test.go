package main

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/interopclient"
	"github.com/fairway-lb/fairway/internal/pyclient"
)

// parsedCluster matches the line of C-core's xds_client trace for each
// Cluster it accepted, capturing the Cluster's name and the name of the
// policy its lb_policy_config starts with.
var parsedCluster = regexp.MustCompile(`parsed Cluster (\S+): \{.*lb_policy_config=\[\{"([^"]+)"`)

// cCorePolicies is, for each Cluster of interopWorld, the policy C-core 1.51
// applies: with its A52 switch, the first policy of load_balancing_policy
// it implements (1.51 has RoundRobin and RingHash, not yet
// ClientSideWeightedRoundRobin; RoundRobin from the list is flat across
// localities); without it, lb_policy (ROUND_ROBIN: round robin under
// weighted localities).
func cCorePolicies(a52 bool) map[string]string {
	rr := "xds_wrr_locality_experimental"
	if a52 {
		rr = "round_robin"
	}
	want := map[string]string{"echo.default:8080": rr, "other.default:8080": rr}
	for _, p := range lbPolicies {
		want[lbPolicyService(p)+".default:8080"] = rr
	}
	want[lbPolicyService("ring_hash")+".default:8080"] = "ring_hash_experimental"
	return want
}

// appliedPolicies reads, from the xds_client trace of a C-core client, the
// policy C-core applies to each Cluster it accepted (the last one it
// parsed).
func appliedPolicies(trace string) map[string]string {
	got := map[string]string{}
	for _, m := range parsedCluster.FindAllStringSubmatch(trace, -1) {
		got[m[1]] = m[2]
	}
	return got
}

// wantCCorePolicies connects c's channel to every Cluster of want and waits
// until C-core's trace says it accepted each with the policy want names.
func wantCCorePolicies(t *testing.T, c *interopclient.Client, want map[string]string) {
	t.Helper()
	for name := range want {
		c.Connect(name)
	}
	var got map[string]string
	within(t, 10*time.Second, "C-core to accept every Cluster with the expected policy", func() bool {
		got = appliedPolicies(c.Stderr())
		for name, policy := range want {
			if got[name] != policy {
				return false
			}
		}
		return true
	}, func() string {
		return fmt.Sprintf("C-core applies %v, want %v; its trace:\n%s", got, want, grepLines(c.Stderr(), "Cluster"))
	})
}

// TestPythonCCore_Interop drives an independent xDS client on gRPC C-core,
// Debian's python3-grpcio 1.51, against `fairway controlplane --file` and
// real backends, as TestNodeClient_Interop does: a Service without any
// annotation and every fairway.io/lb-policy value are accepted (no NACK) and
// spread RPCs over all endpoints, by short and FQDN name; one ADS stream
// carries every channel; a malformed file keeps the last state serving; and
// the removal of an endpoint reaches a live channel within 3 s. The policy
// C-core applies to each Cluster is read from its xds_client trace.
//
// It runs twice. With GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG=true, C-core
// 1.51 chooses from load_balancing_policy by gRFC A52, taking the first
// policy it implements and NACKing a Cluster with none, as current C-core
// does by default. Without it, C-core reads the legacy lb_policy.
//
// C-core 1.51 crashes (SIGSEGV) as soon as a ring_hash channel connects,
// whatever the control plane (grpc/grpc#31766, fixed by grpc/grpc#32012 in
// January 2023). With 1.51 a second process, which is expected to crash,
// fetches the ring_hash Cluster: the test checks that C-core accepts it as
// ring_hash, but makes no RPC to it.
func TestPythonCCore_Interop(t *testing.T) {
	for _, tc := range []struct {
		name string
		a52  bool
	}{
		{"LoadBalancingPolicyA52", true},
		{"LegacyLBPolicy", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startInterop(t, []string{"127.0.0.41", "127.0.0.42", "127.0.0.43"}, []string{"127.0.0.44", "127.0.0.45"})
			env := []string{"GRPC_TRACE=xds_client", "GRPC_VERBOSITY=INFO", fmt.Sprintf("%s=%t", pyclient.CustomLBConfigEnv, tc.a52)}
			py := pyclient.Start(t, w.xdsAddr, "fairway-ccore-interop", env...)
			t.Logf("C-core client: %v, %s", py.Versions, strings.Join(env, " "))
			policies, want := lbPolicies, cCorePolicies(tc.a52)
			ringHash := lbPolicyService("ring_hash") + ".default:8080"
			crashesOnRingHash := strings.HasPrefix(py.Versions["grpcio"], "1.51.")
			if crashesOnRingHash {
				policies = slices.DeleteFunc(slices.Clone(lbPolicies), func(p string) bool { return p == "ring_hash" })
				delete(want, ringHash)
			}

			w.wantServices(t, py)
			w.wantPolicies(t, py, policies)
			wantCCorePolicies(t, py, want)
			if crashesOnRingHash {
				probe := pyclient.Start(t, w.xdsAddr, "fairway-ccore-ring-hash", env...)
				wantCCorePolicies(t, probe, map[string]string{ringHash: cCorePolicies(tc.a52)[ringHash]})
			}
			wantNoNACK(t, w.cp, "the C-core client")
			w.wantLastGoodState(t, py)
			took := w.wantRemoval(t, py)
			t.Logf("file change → the C-core channel stops using the removed endpoint: %v", took)
		})
	}
}
