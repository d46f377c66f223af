package xdsclient

import (
	"math"
	"net"
	"strconv"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/wire"
)

// FuzzDecode feeds arbitrary bytes to the client's resource decoders as the
// value of a Cluster (cluster) or ClusterLoadAssignment Any. Nothing panics,
// and what is accepted keeps the decoders' promises: a Cluster has a name,
// a strategy chain of the shape wire.ParseChain checks and caller zones with
// non-empty names and fractions within [0, 1]; an assignment has a name and
// endpoints sorted and unique by a canonical "IP:PORT" with a port in
// 1-65535 and a weight of at least 1.
func FuzzDecode(f *testing.F) {
	seed := func(cluster bool, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(cluster, b)
	}
	seed(true, xdstest.Cluster("echo.default:80", `[{"zone_affinity":{}},{"p2c":{}}]`))
	seed(true, xdstest.WithCallerZones(xdstest.Cluster("echo.default:80", ""), map[string]float64{"zone-a": 0.25, "zone-b": 0.75}))
	list, _ := structpb.NewList([]any{map[string]any{"p2c": map[string]any{}}})
	listed := xdstest.Cluster("l.default:80", "")
	listed.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
		wire.MetadataNamespace: {Fields: map[string]*structpb.Value{wire.MetadataStrategy: structpb.NewListValue(list)}},
	}}
	seed(true, listed)
	full := lbEndpoint("10.0.0.2", 8080)
	full.LoadBalancingWeight = wrapperspb.UInt32(5)
	labels, _ := structpb.NewStruct(map[string]any{wire.MetadataLabels: map[string]any{"shard": "3"}})
	full.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: labels}}
	cla := makeCLA("echo.default:80", "10.0.0.1:8080", "[fd00::1]:8080")
	cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, full)
	seed(false, cla)
	seed(false, makeCLA("empty.default:80"))

	var c Client
	f.Fuzz(func(t *testing.T, cluster bool, data []byte) {
		typeURL := wire.EndpointType
		if cluster {
			typeURL = wire.ClusterType
		}
		d := c.decode(typeURL, "1", &anypb.Any{TypeUrl: typeURL, Value: data})
		if d.err != nil {
			return
		}
		switch v := d.value.(type) {
		case Cluster:
			checkCluster(t, v)
		case Endpoints:
			checkEndpoints(t, v)
		default:
			t.Fatalf("decoded a %T", d.value)
		}
	})
}

func checkCluster(t *testing.T, v Cluster) {
	t.Helper()
	if v.Name == "" || v.Resource == nil {
		t.Fatalf("accepted a Cluster without a name or resource: %+v", v)
	}
	if v.Strategy != nil {
		if _, err := wire.ParseChain(v.Strategy); err != nil {
			t.Fatalf("accepted strategy %q: %v", v.Strategy, err)
		}
	}
	for z, f := range v.CallerZones {
		if z == "" || math.IsNaN(f) || f < 0 || f > 1 {
			t.Fatalf("accepted caller zone %q = %v", z, f)
		}
	}
}

func checkEndpoints(t *testing.T, v Endpoints) {
	t.Helper()
	if v.Name == "" {
		t.Fatal("accepted an assignment without a name")
	}
	for i, ep := range v.Endpoints {
		if i > 0 && v.Endpoints[i-1].Address >= ep.Address {
			t.Fatalf("endpoints not sorted and unique: %q then %q", v.Endpoints[i-1].Address, ep.Address)
		}
		host, portStr, err := net.SplitHostPort(ep.Address)
		if err != nil {
			t.Fatalf("address %q: %v", ep.Address, err)
		}
		ip := net.ParseIP(host)
		port, err := strconv.Atoi(portStr)
		if ip == nil || err != nil || port < 1 || port > 65535 || net.JoinHostPort(ip.String(), portStr) != ep.Address {
			t.Fatalf("address %q is not a canonical IP:PORT with a port in 1-65535", ep.Address)
		}
		if ep.Weight < 1 {
			t.Fatalf("endpoint %s: weight %d", ep.Address, ep.Weight)
		}
	}
}
