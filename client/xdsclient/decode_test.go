package xdsclient

import (
	"math"
	"strings"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fairway-lb/fairway/wire"
)

func cmpProto() cmp.Option { return protocmp.Transform() }

func lbEndpoint(host string, port uint32) *endpointpb.LbEndpoint {
	return &endpointpb.LbEndpoint{HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
		Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
			Address: host, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: port},
		}}},
	}}}
}

func TestDecodeEndpoints_Table(t *testing.T) {
	full := lbEndpoint("10.0.0.2", 8080)
	full.HealthStatus = corepb.HealthStatus_DRAINING
	full.LoadBalancingWeight = wrapperspb.UInt32(5)
	full.GetEndpoint().Hostname = "echo-2"
	labels, _ := structpb.NewStruct(map[string]any{wire.MetadataLabels: map[string]any{"shard": "3"}})
	full.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: labels}}

	zeroWeight := lbEndpoint("10.0.0.3", 80)
	zeroWeight.LoadBalancingWeight = wrapperspb.UInt32(0)
	badLabels, _ := structpb.NewStruct(map[string]any{wire.MetadataLabels: map[string]any{"shard": 3}})
	numLabel := lbEndpoint("10.0.0.4", 80)
	numLabel.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: badLabels}}

	cla := func(zone string, eps ...*endpointpb.LbEndpoint) *endpointpb.ClusterLoadAssignment {
		return &endpointpb.ClusterLoadAssignment{ClusterName: "echo.default:8080", Endpoints: []*endpointpb.LocalityLbEndpoints{
			{Locality: &corepb.Locality{Zone: zone}, LbEndpoints: eps},
		}}
	}
	for _, tc := range []struct {
		name    string
		in      *endpointpb.ClusterLoadAssignment
		want    []Endpoint
		wantErr bool
	}{
		{name: "empty", in: cla("a")},
		{name: "full", in: cla("zone-b", lbEndpoint("fd00::1", 80), full), want: []Endpoint{
			{Address: "10.0.0.2:8080", Zone: "zone-b", Hostname: "echo-2", Weight: 5, Health: corepb.HealthStatus_DRAINING, Labels: map[string]string{"shard": "3"}},
			{Address: "[fd00::1]:80", Zone: "zone-b", Weight: 1},
		}},
		{name: "no socket address", in: cla("a", &endpointpb.LbEndpoint{}), wantErr: true},
		{name: "port 0", in: cla("a", lbEndpoint("10.0.0.1", 0)), wantErr: true},
		{name: "not an IP", in: cla("a", lbEndpoint("echo.local", 80)), wantErr: true},
		{name: "weight 0", in: cla("a", zeroWeight), wantErr: true},
		{name: "label not a string", in: cla("a", numLabel), wantErr: true},
		{name: "duplicate", in: cla("a", lbEndpoint("10.0.0.1", 80), lbEndpoint("10.0.0.1", 80)), wantErr: true},
		{name: "no name", in: &endpointpb.ClusterLoadAssignment{}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeEndpoints(tc.in, "v1")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(got.Endpoints, tc.want); diff != "" {
				t.Errorf("endpoints (-got +want):\n%s", diff)
			}
		})
	}
}

func TestDecodeCluster_Strategy(t *testing.T) {
	list, _ := structpb.NewList([]any{map[string]any{"p2c": map[string]any{}}})
	twoKeys, _ := structpb.NewList([]any{map[string]any{"p2c": map[string]any{}, "outlier": map[string]any{}}})
	for _, tc := range []struct {
		name    string
		value   *structpb.Value // nil: no strategy key
		want    string
		wantErr bool
	}{
		{name: "absent"},
		{name: "empty string", value: structpb.NewStringValue("")},
		{name: "JSON string", value: structpb.NewStringValue(`[{"zone_affinity":{}},{"p2c":{}}]`), want: `[{"zone_affinity":{}},{"p2c":{}}]`},
		{name: "list", value: structpb.NewListValue(list), want: `[{"p2c":{}}]`},
		{name: "not JSON", value: structpb.NewStringValue("p2c"), wantErr: true},
		{name: "JSON object", value: structpb.NewStringValue(`{"p2c":{}}`), wantErr: true},
		{name: "number", value: structpb.NewNumberValue(3), wantErr: true},
		{name: "null", value: structpb.NewNullValue()},
		{name: "array of non-objects", value: structpb.NewStringValue(`[1]`), wantErr: true},
		{name: "name not snake_case", value: structpb.NewStringValue(`[{"ZoneAffinity":{}}]`), wantErr: true},
		{name: "list element with two keys", value: structpb.NewListValue(twoKeys), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := makeCluster("echo.default:8080", "")
			if tc.value != nil {
				cl.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
					wire.MetadataNamespace: {Fields: map[string]*structpb.Value{wire.MetadataStrategy: tc.value}},
				}}
			}
			got, err := decodeCluster(cl, "v1")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(string(got.Strategy), tc.want); diff != "" {
				t.Errorf("strategy (-got +want):\n%s", diff)
			}
		})
	}
}

func TestDecodeCluster_CallerZones(t *testing.T) {
	obj := func(m map[string]any) *structpb.Value {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return structpb.NewStructValue(s)
	}
	for _, tc := range []struct {
		name    string
		value   *structpb.Value // nil: no caller_zones key
		want    map[string]float64
		wantErr bool
	}{
		{name: "absent"},
		{name: "null", value: structpb.NewNullValue()},
		{name: "empty object", value: obj(map[string]any{}), want: map[string]float64{}},
		{name: "three zones", value: obj(map[string]any{"a": 0.6, "b": 0.2, "c": 0.2}), want: map[string]float64{"a": 0.6, "b": 0.2, "c": 0.2}},
		{name: "bounds", value: obj(map[string]any{"a": 1.0, "b": 0.0}), want: map[string]float64{"a": 1, "b": 0}},
		{name: "not an object", value: structpb.NewStringValue(`{"a":1}`), wantErr: true},
		{name: "list", value: structpb.NewListValue(&structpb.ListValue{}), wantErr: true},
		{name: "string fraction", value: obj(map[string]any{"a": "0.5"}), wantErr: true},
		{name: "above 1", value: obj(map[string]any{"a": 1.5}), wantErr: true},
		{name: "negative", value: obj(map[string]any{"a": -0.1}), wantErr: true},
		{name: "NaN", value: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(math.NaN())}}), wantErr: true},
		{name: "infinite", value: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(math.Inf(1))}}), wantErr: true},
		{name: "empty zone name", value: obj(map[string]any{"": 0.5, "a": 0.5}), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := makeCluster("echo.default:8080", `[{"p2c":{}}]`)
			if tc.value != nil {
				if cl.Metadata == nil {
					cl.Metadata = &corepb.Metadata{}
				}
				if cl.Metadata.FilterMetadata == nil {
					cl.Metadata.FilterMetadata = map[string]*structpb.Struct{}
				}
				md := cl.Metadata.FilterMetadata[wire.MetadataNamespace]
				if md == nil {
					md = &structpb.Struct{Fields: map[string]*structpb.Value{}}
					cl.Metadata.FilterMetadata[wire.MetadataNamespace] = md
				}
				md.Fields[wire.MetadataCallerZones] = tc.value
			}
			got, err := decodeCluster(cl, "v1")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "caller_zones") {
					t.Errorf("error %q does not name caller_zones", err)
				}
				return
			}
			if diff := cmp.Diff(got.CallerZones, tc.want); diff != "" {
				t.Errorf("caller zones (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(string(got.Strategy), `[{"p2c":{}}]`); diff != "" {
				t.Errorf("strategy (-got +want):\n%s", diff)
			}
		})
	}
}
