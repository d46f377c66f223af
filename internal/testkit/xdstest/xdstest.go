// Package xdstest holds what Fairway's tests of an xDS server's answers
// share: the first response to one request over ADS, SotW or delta, and
// the resource names services are served under. Test code only; every
// failure fails the test.
package xdstest

import (
	"context"
	"slices"
	"strings"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Types are the type URLs Fairway serves.
var Types = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// Protocol is an ADS variant.
type Protocol string

const (
	SotW  Protocol = "sotw"
	Delta Protocol = "delta"
)

// Protocols are both ADS variants.
var Protocols = []Protocol{SotW, Delta}

// ResourceNames returns the sorted resource names of type typ of the
// services named services ("name.namespace:port"); a Listener is also
// served under its FQDN name.
func ResourceNames(typ string, services []string) []string {
	var out []string
	for _, n := range services {
		out = append(out, n)
		if typ == resourcev3.ListenerType {
			name, port, _ := strings.Cut(n, ":")
			out = append(out, name+".svc.cluster.local:"+port)
		}
	}
	slices.Sort(out)
	return out
}

// Names returns the sorted names of the resources rs.
func Names(t testing.TB, rs []*anypb.Any) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		m, err := r.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cachev3.GetResourceName(m.(types.Resource)))
	}
	slices.Sort(out)
	return out
}

// Response is the first response to a request, as FirstResponse reads it.
type Response struct {
	Names   []string // of its resources, sorted
	Removed []string // delta: its removed_resources
	Raw     []byte   // the response, marshalled
}

// FirstResponse opens an ADS stream of protocol p on cc with ctx (which
// ends it), sends one request of type typ from node id node for names
// (none: the wildcard) and returns the first response.
func FirstResponse(ctx context.Context, t testing.TB, cc grpc.ClientConnInterface, p Protocol, node, typ string, names []string) Response {
	t.Helper()
	ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
	var resp interface {
		proto.Message
		GetResources() []*anypb.Any
	}
	var removed []string
	switch p {
	case SotW:
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typ, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("%s %s, names %v: %v", p, typ, names, err)
		}
		resp = r
	case Delta:
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typ, ResourceNamesSubscribe: names}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("%s %s, names %v: %v", p, typ, names, err)
		}
		resp, removed = deltaResources{r}, r.GetRemovedResources()
	default:
		t.Fatalf("xdstest: unknown protocol %q", p)
	}
	raw, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Names: Names(t, resp.GetResources()), Removed: removed, Raw: raw}
}

// deltaResources is a delta response whose GetResources are the Anys of
// its resources.
type deltaResources struct {
	*discoverypb.DeltaDiscoveryResponse
}

func (d deltaResources) GetResources() []*anypb.Any {
	var out []*anypb.Any
	for _, r := range d.DeltaDiscoveryResponse.GetResources() {
		out = append(out, r.GetResource())
	}
	return out
}
