package xdsserver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// streamOf returns the one open stream of node id in s.Clients(), or false.
func streamOf(s *xdsserver.Server, id string) (xdsserver.StreamDump, bool) {
	for _, st := range s.Clients().Streams {
		if st.NodeID == id {
			return st, true
		}
	}
	return xdsserver.StreamDump{}, false
}

// TestServer_ClientsTracksDeltaSubscriptionsBounded: a delta stream's
// subscriptions follow its subscribes and unsubscribes, an ACK records the
// version sent, and a stream subscribed to more names than are listed
// counts them all and lists at most 100.
func TestServer_ClientsTracksDeltaSubscriptionsBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), service("b", "10.0.0.2")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)

	d := newDeltaStream(ctx, t, s.addr)
	d.subscribe(resourcev3.ClusterType, "a.default:8080", "b.default:8080")
	d.next() // ACKed
	d.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesUnsubscribe: []string{"b.default:8080"}})
	var st xdsserver.StreamDump
	testkit.Eventually(ctx, t, "the delta stream's subscription and ACK", func() bool {
		var ok bool
		st, ok = streamOf(s.Server, "delta-client")
		return ok && len(st.Subscriptions) == 1 && st.Subscriptions[0].NameCount == 1 && st.Subscriptions[0].AckedVersion != ""
	})
	if sub := st.Subscriptions[0]; st.Protocol != "delta" || !slices.Equal(sub.Names, []string{"a.default:8080"}) || sub.AckedVersion != sub.SentVersion {
		t.Errorf("delta stream: %+v", st)
	}

	many := make([]string, 150)
	for i := range many {
		many[i] = fmt.Sprintf("svc%03d.default:8080", i)
	}
	a := newSotWADS(ctx, t, s.addr)
	a.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "many"}, TypeUrl: resourcev3.EndpointType, ResourceNames: many})
	a.recv()
	testkit.Eventually(ctx, t, "the SotW stream with 150 names", func() bool {
		st, ok := streamOf(s.Server, "many")
		return ok && len(st.Subscriptions) == 1 && st.Subscriptions[0].NameCount == 150 && len(st.Subscriptions[0].Names) == 100
	})

	// Delta past the cap: names subscribed again, and names never
	// subscribed unsubscribed, leave the count where it is.
	d.subscribe(resourcev3.EndpointType, many...)
	d.subscribe(resourcev3.EndpointType, many[120:130]...)
	d.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{"nope1.default:8080", "nope2.default:8080"}})
	d.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: many[:3]})
	testkit.Eventually(ctx, t, "the delta stream's 147 endpoint names", func() bool {
		st, ok := streamOf(s.Server, "delta-client")
		for _, sub := range st.Subscriptions {
			if ok && sub.TypeURL == resourcev3.EndpointType {
				return sub.NameCount == 147 && len(sub.Names) <= 100
			}
		}
		return false
	})
}
