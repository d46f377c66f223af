package xdsserver_test

import (
	"context"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// request asks for names of type typ on a, ACKing resp when given, and
// returns the resources of the next response by name.
func (a *sotwADS) request(typ string, resp *discoverypb.DiscoveryResponse, names ...string) (*discoverypb.DiscoveryResponse, map[string]bool) {
	a.t.Helper()
	a.send(&discoverypb.DiscoveryRequest{
		Node: &corepb.Node{Id: "client-1"}, TypeUrl: typ, ResourceNames: names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	})
	next := a.recv()
	got := map[string]bool{}
	for _, r := range next.GetResources() {
		m, err := r.UnmarshalNew()
		if err != nil {
			a.t.Fatal(err)
		}
		switch m := m.(type) {
		case *clusterpb.Cluster:
			got[m.GetName()] = true
		case *endpointpb.ClusterLoadAssignment:
			got[m.GetClusterName()] = true
		}
	}
	return next, got
}

// Finding 1 of issue 10: a strategy chain that is not valid UTF-8 panicked
// in the push goroutine, killing the control plane.
func TestServer_NonUTF8StrategyIsLeftOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	bad := service("bad", "10.0.0.2")
	bad.Policy.Strategy = `[{"p2c":{"x":"` + "\xff" + `"}}]`
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), bad})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	resp, got := stream.request(resourcev3.ClusterType, nil, key("a").ResourceName(), key("bad").ResourceName())
	if !got[key("a").ResourceName()] || got[key("bad").ResourceName()] {
		t.Errorf("Clusters %v, want a only", got)
	}
	if n := testkit.MetricValue(t, s.reg, "fairway_xds_render_failures_total"); n != 1 {
		t.Errorf("fairway_xds_render_failures_total = %v, want 1", n)
	}

	// The push goroutine lives on; the bad service, unchanged, is not
	// counted again; fixed, it is served whole.
	a2 := service("a", "10.0.0.1")
	a2.Policy.LB = topology.RoundRobin
	snap = snap.With(2, time.Now(), []*topology.Service{a2}, nil)
	s.Update(snap)
	resp, got = stream.request(resourcev3.ClusterType, resp, key("a").ResourceName(), key("bad").ResourceName())
	if !got[key("a").ResourceName()] || got[key("bad").ResourceName()] {
		t.Errorf("Clusters after changing a: %v, want a only", got)
	}
	if n := testkit.MetricValue(t, s.reg, "fairway_xds_render_failures_total"); n != 1 {
		t.Errorf("fairway_xds_render_failures_total after a push with the same bad service = %v, want 1", n)
	}
	s.Update(snap.With(3, time.Now(), []*topology.Service{service("bad", "10.0.0.2")}, nil))
	_, got = stream.request(resourcev3.ClusterType, resp, key("a").ResourceName(), key("bad").ResourceName())
	if !got[key("a").ResourceName()] || !got[key("bad").ResourceName()] {
		t.Errorf("Clusters after fixing bad: %v, want a and bad", got)
	}
}

// Finding 1 of issue 10: an endpoint hostname that is not valid UTF-8 failed
// the marshaling of every response carrying its service, for the whole ADS
// stream: the client's other services stopped updating, and nothing was
// logged.
func TestServer_NonUTF8HostnameDoesNotStopOtherServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	bad := service("bad", "10.0.0.2")
	bad.Endpoints[0].Hostname = "pod-\xff"
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), bad})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	names := []string{key("a").ResourceName(), key("bad").ResourceName()}
	resp, got := stream.request(resourcev3.EndpointType, nil, names...)
	if !got[key("a").ResourceName()] || got[key("bad").ResourceName()] {
		t.Errorf("ClusterLoadAssignments %v, want a only", got)
	}
	snap = snap.With(2, time.Now(), []*topology.Service{service("a", "10.0.0.1", "10.0.0.3")}, nil)
	s.Update(snap)
	resp, got = stream.request(resourcev3.EndpointType, resp, names...)
	if !got[key("a").ResourceName()] {
		t.Errorf("ClusterLoadAssignments after changing a: %v, want a", got)
	}

	// Fixed by a change of endpoints alone, the service is rendered whole:
	// its Cluster, never pushed, is there too.
	s.Update(snap.With(3, time.Now(), []*topology.Service{service("bad", "10.0.0.2")}, nil))
	_, got = stream.request(resourcev3.EndpointType, resp, names...)
	if !got[key("bad").ResourceName()] {
		t.Errorf("ClusterLoadAssignments after fixing bad: %v, want bad", got)
	}
	_, got = stream.request(resourcev3.ClusterType, nil, names...)
	if !got[key("bad").ResourceName()] {
		t.Errorf("Clusters after fixing bad: %v, want bad", got)
	}
}

// A service whose translation panics is left out and counted; the push
// goroutine and the other services carry on.
func TestServer_PanickingRenderIsRecovered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	t.Cleanup(xdsserver.SetTranslateLoadAssignment(func(svc *topology.Service) *endpointpb.ClusterLoadAssignment {
		if svc.Key.Name == "boom" {
			panic("boom")
		}
		return translate.LoadAssignment(svc)
	}))
	s := startServer(t)
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), service("boom", "10.0.0.2")})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	names := []string{key("a").ResourceName(), key("boom").ResourceName()}
	resp, got := stream.request(resourcev3.EndpointType, nil, names...)
	if !got[key("a").ResourceName()] || got[key("boom").ResourceName()] {
		t.Errorf("ClusterLoadAssignments %v, want a only", got)
	}
	if n := testkit.MetricValue(t, s.reg, "fairway_xds_render_failures_total"); n != 1 {
		t.Errorf("fairway_xds_render_failures_total = %v, want 1", n)
	}
	s.Update(snap.With(2, time.Now(), []*topology.Service{service("a", "10.0.0.1", "10.0.0.3"), service("boom", "10.0.0.4")}, nil))
	if _, got = stream.request(resourcev3.EndpointType, resp, names...); !got[key("a").ResourceName()] {
		t.Errorf("ClusterLoadAssignments after changing a: %v, want a", got)
	}
	testkit.Eventually(ctx, t, "the new version of boom counted", func() bool {
		return testkit.MetricValue(t, s.reg, "fairway_xds_render_failures_total") == 2
	})
}
