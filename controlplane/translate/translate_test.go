package translate_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wrrpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	lbcommonpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	randompb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	httpupstreampb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
)

var key = topology.ServiceKey{Namespace: "default", Name: "echo", Port: 8080}

func ep(addr, zone string, ready, serving, terminating bool) topology.Endpoint {
	return topology.Endpoint{Address: addr, Port: 9000, Zone: zone, Ready: ready, Serving: serving, Terminating: terminating, Weight: 1}
}

func lbe(addr string, hs corepb.HealthStatus, weight uint32) *endpointpb.LbEndpoint {
	return &endpointpb.LbEndpoint{
		HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
			Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
				Address: addr, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: 9000},
			}}},
		}},
		HealthStatus:        hs,
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestHealthStatus_Mapping(t *testing.T) {
	tests := []struct {
		ready, serving, terminating bool
		want                        corepb.HealthStatus
	}{
		{true, true, false, corepb.HealthStatus_HEALTHY},
		{true, false, false, corepb.HealthStatus_HEALTHY},
		{true, true, true, corepb.HealthStatus_HEALTHY},
		{false, true, true, corepb.HealthStatus_DRAINING},
		{false, false, true, corepb.HealthStatus_UNHEALTHY},
		{false, true, false, corepb.HealthStatus_UNHEALTHY},
		{false, false, false, corepb.HealthStatus_UNHEALTHY},
	}
	for _, tt := range tests {
		got := translate.HealthStatus(ep("10.0.0.1", "", tt.ready, tt.serving, tt.terminating))
		if got != tt.want {
			t.Errorf("HealthStatus(ready=%v serving=%v terminating=%v) = %v, want %v", tt.ready, tt.serving, tt.terminating, got, tt.want)
		}
	}
}

func TestLoadAssignment_Translation(t *testing.T) {
	labelled := ep("10.0.0.3", "zone-b", true, true, false)
	labelled.Weight = 5
	labelled.Hostname = "echo-3"
	labelled.Labels = map[string]string{"shard": "7"}
	labelledWant := lbe("10.0.0.3", corepb.HealthStatus_HEALTHY, 5)
	labelledWant.GetEndpoint().Hostname = "echo-3"
	labelledWant.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{"fairway.io": {Fields: map[string]*structpb.Value{
		"labels": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"shard": structpb.NewStringValue("7")}}),
	}}}}
	zeroWeight := ep("10.0.0.9", "", true, true, false)
	zeroWeight.Weight = 0

	tests := []struct {
		name string
		eps  []topology.Endpoint
		want []*endpointpb.LocalityLbEndpoints
	}{
		{name: "no endpoints", eps: nil, want: nil},
		{
			name: "zones sorted, weights from healthy endpoints",
			eps: []topology.Endpoint{
				ep("10.0.0.1", "zone-b", true, true, false),
				ep("10.0.0.2", "zone-a", false, true, true),
				labelled,
				ep("10.0.0.4", "zone-a", false, false, false),
				ep("10.0.0.5", "", true, true, false),
			},
			want: []*endpointpb.LocalityLbEndpoints{
				{
					Locality:            &corepb.Locality{},
					LoadBalancingWeight: wrapperspb.UInt32(1),
					LbEndpoints:         []*endpointpb.LbEndpoint{lbe("10.0.0.5", corepb.HealthStatus_HEALTHY, 1)},
				},
				{
					Locality:            &corepb.Locality{Zone: "zone-a"},
					LoadBalancingWeight: wrapperspb.UInt32(1), // no healthy endpoint: minimum 1
					LbEndpoints: []*endpointpb.LbEndpoint{
						lbe("10.0.0.2", corepb.HealthStatus_DRAINING, 1),
						lbe("10.0.0.4", corepb.HealthStatus_UNHEALTHY, 1),
					},
				},
				{
					Locality:            &corepb.Locality{Zone: "zone-b"},
					LoadBalancingWeight: wrapperspb.UInt32(6),
					LbEndpoints:         []*endpointpb.LbEndpoint{lbe("10.0.0.1", corepb.HealthStatus_HEALTHY, 1), labelledWant},
				},
			},
		},
		{
			name: "zero weight clamped to 1",
			eps:  []topology.Endpoint{zeroWeight},
			want: []*endpointpb.LocalityLbEndpoints{{
				Locality:            &corepb.Locality{},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*endpointpb.LbEndpoint{lbe("10.0.0.9", corepb.HealthStatus_HEALTHY, 1)},
			}},
		},
		{
			name: "IPv6",
			eps:  []topology.Endpoint{ep("fd00::1", "z", true, true, false)},
			want: []*endpointpb.LocalityLbEndpoints{{
				Locality:            &corepb.Locality{Zone: "z"},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*endpointpb.LbEndpoint{lbe("fd00::1", corepb.HealthStatus_HEALTHY, 1)},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate.LoadAssignment(&topology.Service{Key: key, Policy: topology.DefaultPolicy(), Endpoints: tt.eps})
			want := &endpointpb.ClusterLoadAssignment{ClusterName: "echo.default:8080", Endpoints: tt.want}
			if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
				t.Errorf("LoadAssignment mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func TestCluster_Translation(t *testing.T) {
	ads := &corepb.ConfigSource{
		ResourceApiVersion:    corepb.ApiVersion_V3,
		ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
	}
	base := func(policies ...*clusterpb.LoadBalancingPolicy_Policy) *clusterpb.Cluster {
		return &clusterpb.Cluster{
			Name:                 "echo.default:8080",
			ClusterDiscoveryType: &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS},
			EdsClusterConfig:     &clusterpb.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: "echo.default:8080"},
			ConnectTimeout:       durationpb.New(translate.ConnectTimeout),
			LbPolicy:             clusterpb.Cluster_ROUND_ROBIN,
			LoadBalancingPolicy:  &clusterpb.LoadBalancingPolicy{Policies: policies},
			TypedExtensionProtocolOptions: map[string]*anypb.Any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &httpupstreampb.HttpProtocolOptions{
					UpstreamProtocolOptions: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corepb.Http2ProtocolOptions{}},
					}},
				}),
			},
		}
	}
	policy := func(name string, m proto.Message) *clusterpb.LoadBalancingPolicy_Policy {
		return &clusterpb.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corepb.TypedExtensionConfig{Name: name, TypedConfig: mustAny(t, m)}}
	}
	slow := &topology.SlowStart{Window: 30 * time.Second, Aggression: 2, MinWeightPercent: 10}
	slowPB := &lbcommonpb.SlowStartConfig{
		SlowStartWindow:  durationpb.New(30 * time.Second),
		Aggression:       &corepb.RuntimeDouble{DefaultValue: 2, RuntimeKey: "fairway.slow_start.aggression"},
		MinWeightPercent: &typepb.Percent{Value: 10},
	}

	roundRobin := policy("envoy.load_balancing_policies.round_robin", &roundrobinpb.RoundRobin{})
	withOutlier := base(policy("envoy.load_balancing_policies.least_request", &leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)}), roundRobin)
	withOutlier.OutlierDetection = &clusterpb.OutlierDetection{
		Interval:                           durationpb.New(time.Second),
		BaseEjectionTime:                   durationpb.New(30 * time.Second),
		MaxEjectionPercent:                 wrapperspb.UInt32(20),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		EnforcingFailurePercentage:         wrapperspb.UInt32(100),
		FailurePercentageThreshold:         wrapperspb.UInt32(50),
		FailurePercentageMinimumHosts:      wrapperspb.UInt32(3),
		FailurePercentageRequestVolume:     wrapperspb.UInt32(20),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
	}
	withStrategy := base(roundRobin)
	withStrategy.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{"fairway.io": {Fields: map[string]*structpb.Value{
		"strategy": structpb.NewStringValue(`[{"p2c":{}}]`),
	}}}}

	withCallers := base(roundRobin)
	withCallers.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{"fairway.io": {Fields: map[string]*structpb.Value{
		"strategy": structpb.NewStringValue(`[{"p2c":{}}]`),
		"caller_zones": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"zone-a": structpb.NewNumberValue(0.667),
			"zone-b": structpb.NewNumberValue(0.333),
			"zone-c": structpb.NewNumberValue(0),
			"zone-d": structpb.NewNumberValue(1),
		}}),
	}}}}
	onlyCallers := base(roundRobin)
	onlyCallers.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{"fairway.io": {Fields: map[string]*structpb.Value{
		"caller_zones": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"zone-a": structpb.NewNumberValue(1),
		}}),
	}}}}

	ringHash := base(policy("envoy.load_balancing_policies.ring_hash", &ringhashpb.RingHash{HashFunction: ringhashpb.RingHash_XX_HASH}), roundRobin)
	ringHash.LbPolicy = clusterpb.Cluster_RING_HASH

	tests := []struct {
		name   string
		policy topology.Policy
		opts   []translate.ClusterOption
		want   *clusterpb.Cluster
	}{
		{
			name:   "default policy",
			policy: topology.DefaultPolicy(),
			want:   withOutlier,
		},
		{
			name:   "least request with slow start and choice count, falling back to round robin",
			policy: topology.Policy{LB: topology.LeastRequest, ChoiceCount: 3, SlowStart: slow},
			want: base(
				policy("envoy.load_balancing_policies.least_request", &leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(3), SlowStartConfig: slowPB}),
				policy("envoy.load_balancing_policies.round_robin", &roundrobinpb.RoundRobin{SlowStartConfig: slowPB})),
		},
		{
			name:   "unset policy is least request with two choices",
			policy: topology.Policy{},
			want:   base(policy("envoy.load_balancing_policies.least_request", &leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)}), roundRobin),
		},
		{
			name:   "round robin with slow start",
			policy: topology.Policy{LB: topology.RoundRobin, SlowStart: &topology.SlowStart{Window: time.Minute}},
			want: base(policy("envoy.load_balancing_policies.round_robin",
				&roundrobinpb.RoundRobin{SlowStartConfig: &lbcommonpb.SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute)}})),
		},
		{
			name:   "random falls back to round robin",
			policy: topology.Policy{LB: topology.Random},
			want:   base(policy("envoy.load_balancing_policies.random", &randompb.Random{}), roundRobin),
		},
		{
			name:   "weighted round robin with slow start falls back to round robin",
			policy: topology.Policy{LB: topology.WeightedRoundRobin, SlowStart: slow},
			want: base(
				policy("envoy.load_balancing_policies.client_side_weighted_round_robin", &wrrpb.ClientSideWeightedRoundRobin{SlowStartConfig: slowPB}),
				policy("envoy.load_balancing_policies.round_robin", &roundrobinpb.RoundRobin{SlowStartConfig: slowPB})),
		},
		{
			name:   "weighted round robin with its periods",
			policy: topology.Policy{LB: topology.WeightedRoundRobin, WRR: &topology.WRR{BlackoutPeriod: time.Second, WeightUpdatePeriod: 200 * time.Millisecond}},
			want: base(
				policy("envoy.load_balancing_policies.client_side_weighted_round_robin", &wrrpb.ClientSideWeightedRoundRobin{
					BlackoutPeriod: durationpb.New(time.Second), WeightUpdatePeriod: durationpb.New(200 * time.Millisecond)}),
				roundRobin),
		},
		{
			name:   "ring hash with XX_HASH falls back to round robin, legacy lb_policy RING_HASH",
			policy: topology.Policy{LB: topology.RingHash, HashHeader: "x-tenant"},
			want:   ringHash,
		},
		{
			name:   "strategy in metadata",
			policy: topology.Policy{LB: topology.RoundRobin, Strategy: `[{"p2c":{}}]`},
			want:   withStrategy,
		},
		{
			name:   "caller zones rounded, clamped, empty zone left out, next to the strategy",
			policy: topology.Policy{LB: topology.RoundRobin, Strategy: `[{"p2c":{}}]`},
			opts: []translate.ClusterOption{translate.WithCallerZones(map[string]float64{
				"zone-a": 2.0 / 3, "zone-b": 1.0 / 3, "zone-c": -0.1, "zone-d": 1.5, "": 0.5,
			})},
			want: withCallers,
		},
		{
			name:   "caller zones without a strategy",
			policy: topology.Policy{LB: topology.RoundRobin},
			opts:   []translate.ClusterOption{translate.WithCallerZones(map[string]float64{"zone-a": 1})},
			want:   onlyCallers,
		},
		{
			name:   "empty caller zones add nothing",
			policy: topology.Policy{LB: topology.RoundRobin, Strategy: `[{"p2c":{}}]`},
			opts:   []translate.ClusterOption{translate.WithCallerZones(map[string]float64{})},
			want:   withStrategy,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate.Cluster(&topology.Service{Key: key, Policy: tt.policy}, tt.opts...)
			if diff := cmp.Diff(got, tt.want, protocmp.Transform()); diff != "" {
				t.Errorf("Cluster mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

// clientPolicies are the load_balancing_policy entries each xDS client
// implements (typed_config message names), as their sources register them:
// grpc-go 1.85 internal/xds/xdsclient/xdslbregistry/converter, grpc-java
// 1.85 xds LoadBalancerConfigFactory, C-core
// src/core/xds/grpc/xds_lb_policy_registry.cc, grpc-js-xds 1.14
// src/lb-policy-registry, Envoy's load_balancing_policies extensions
// (TypedStruct custom policies left out). docs/clients.md holds the same
// table.
var clientPolicies = map[string][]string{
	"grpc-go":   {"LeastRequest", "RoundRobin", "RingHash", "ClientSideWeightedRoundRobin", "WrrLocality", "PickFirst"},
	"grpc-java": {"LeastRequest", "RoundRobin", "RingHash", "ClientSideWeightedRoundRobin", "WrrLocality", "PickFirst"},
	"C-core":    {"RoundRobin", "RingHash", "ClientSideWeightedRoundRobin", "WrrLocality", "PickFirst"},
	"grpc-js":   {"RoundRobin", "RingHash", "ClientSideWeightedRoundRobin", "WrrLocality", "PickFirst"},
	"Envoy":     {"LeastRequest", "RoundRobin", "Random", "RingHash", "Maglev", "ClientSideWeightedRoundRobin", "WrrLocality", "PickFirst"},
}

// TestCluster_EveryClientFindsAPolicy: for every fairway.io/lb-policy value
// each client finds a policy it implements in the Cluster's list (gRFC A52:
// the first one it knows), the one docs/clients.md says; the list ends with
// RoundRobin, and the legacy lb_policy says RING_HASH for ring_hash and
// ROUND_ROBIN otherwise, both known to every client that reads only that
// field.
func TestCluster_EveryClientFindsAPolicy(t *testing.T) {
	everywhere := func(p string) map[string]string {
		return map[string]string{"grpc-go": p, "grpc-java": p, "C-core": p, "grpc-js": p, "Envoy": p}
	}
	leastRequest := map[string]string{"grpc-go": "LeastRequest", "grpc-java": "LeastRequest", "C-core": "RoundRobin", "grpc-js": "RoundRobin", "Envoy": "LeastRequest"}
	tests := map[topology.LBPolicy]struct {
		want   map[string]string
		legacy clusterpb.Cluster_LbPolicy
	}{
		"":                          {leastRequest, clusterpb.Cluster_ROUND_ROBIN}, // the default
		topology.LeastRequest:       {leastRequest, clusterpb.Cluster_ROUND_ROBIN},
		topology.RoundRobin:         {everywhere("RoundRobin"), clusterpb.Cluster_ROUND_ROBIN},
		topology.Random:             {map[string]string{"grpc-go": "RoundRobin", "grpc-java": "RoundRobin", "C-core": "RoundRobin", "grpc-js": "RoundRobin", "Envoy": "Random"}, clusterpb.Cluster_ROUND_ROBIN},
		topology.WeightedRoundRobin: {everywhere("ClientSideWeightedRoundRobin"), clusterpb.Cluster_ROUND_ROBIN},
		topology.RingHash:           {everywhere("RingHash"), clusterpb.Cluster_RING_HASH},
	}
	for lb, tt := range tests {
		c := translate.Cluster(&topology.Service{Key: key, Policy: topology.Policy{LB: lb}})
		var list []string
		for _, p := range c.GetLoadBalancingPolicy().GetPolicies() {
			full := p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl()
			list = append(list, full[strings.LastIndex(full, ".")+1:])
		}
		got := map[string]string{}
		for client, implemented := range clientPolicies {
			if i := slices.IndexFunc(list, func(p string) bool { return slices.Contains(implemented, p) }); i >= 0 {
				got[client] = list[i]
			}
		}
		if diff := cmp.Diff(got, tt.want); diff != "" {
			t.Errorf("lb %q, list %v: policy each client applies (-got +want):\n%s", lb, list, diff)
		}
		if list[len(list)-1] != "RoundRobin" || c.GetLbPolicy() != tt.legacy {
			t.Errorf("lb %q: list %v, lb_policy %v; want RoundRobin last and lb_policy %v", lb, list, c.GetLbPolicy(), tt.legacy)
		}
	}
}

func TestListenersAndRoute_Translation(t *testing.T) {
	svc := &topology.Service{Key: key, Policy: topology.DefaultPolicy()}
	ads := &corepb.ConfigSource{
		ResourceApiVersion:    corepb.ApiVersion_V3,
		ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
	}
	lis := func(name string) *listenerpb.Listener {
		return &listenerpb.Listener{Name: name, ApiListener: &listenerpb.ApiListener{ApiListener: mustAny(t, &hcmpb.HttpConnectionManager{
			StatPrefix:     name,
			RouteSpecifier: &hcmpb.HttpConnectionManager_Rds{Rds: &hcmpb.Rds{ConfigSource: ads, RouteConfigName: "echo.default:8080"}},
			HttpFilters: []*hcmpb.HttpFilter{{
				Name:       "envoy.filters.http.router",
				ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerpb.Router{})},
			}},
		})}}
	}
	wantListeners := []*listenerpb.Listener{lis("echo.default:8080"), lis("echo.default.svc.cluster.local:8080")}
	if diff := cmp.Diff(translate.Listeners(svc), wantListeners, protocmp.Transform()); diff != "" {
		t.Errorf("Listeners mismatch (-got +want):\n%s", diff)
	}
	wantRoute := &routepb.RouteConfiguration{
		Name: "echo.default:8080",
		VirtualHosts: []*routepb.VirtualHost{{
			Name:    "echo.default:8080",
			Domains: []string{"*"},
			Routes: []*routepb.Route{{
				Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: ""}},
				Action: &routepb.Route_Route{Route: &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: "echo.default:8080"}}},
			}},
		}},
	}
	if diff := cmp.Diff(translate.RouteConfig(svc), wantRoute, protocmp.Transform()); diff != "" {
		t.Errorf("RouteConfig mismatch (-got +want):\n%s", diff)
	}
}

func TestRouteConfig_RingHashHashesOnHeader(t *testing.T) {
	tests := map[string]struct {
		policy topology.Policy
		want   []*routepb.RouteAction_HashPolicy
	}{
		"default header": {policy: topology.Policy{LB: topology.RingHash}, want: headerHash("x-fairway-shard")},
		"own header":     {policy: topology.Policy{LB: topology.RingHash, HashHeader: "x-tenant"}, want: headerHash("x-tenant")},
		"not ring_hash":  {policy: topology.Policy{LB: topology.WeightedRoundRobin, HashHeader: "x-tenant"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			rc := translate.RouteConfig(&topology.Service{Key: key, Policy: tt.policy})
			got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetHashPolicy()
			if diff := cmp.Diff(got, tt.want, protocmp.Transform()); diff != "" {
				t.Errorf("hash policy mismatch (-got +want):\n%s", diff)
			}
			if err := rc.ValidateAll(); err != nil {
				t.Errorf("ValidateAll() = %v", err)
			}
		})
	}
}

func headerHash(name string) []*routepb.RouteAction_HashPolicy {
	return []*routepb.RouteAction_HashPolicy{{PolicySpecifier: &routepb.RouteAction_HashPolicy_Header_{
		Header: &routepb.RouteAction_HashPolicy_Header{HeaderName: name},
	}}}
}

type validator interface {
	proto.Message
	ValidateAll() error
}

func TestResources_ValidateAll(t *testing.T) {
	many := []topology.Endpoint{
		ep("10.0.0.1", "zone-a", true, true, false),
		ep("10.0.0.2", "zone-b", false, true, true),
		ep("10.0.0.3", "zone-c", false, false, false),
		ep("10.0.0.4", "", true, true, false),
	}
	labelled := ep("10.0.1.1", "zone-a", true, true, false)
	labelled.Labels = map[string]string{"shard": "1", "hw": "gpu"}
	labelled.Hostname = "pod-1"
	labelled.Weight = 10
	outlier := topology.DefaultOutlier()
	services := map[string]*topology.Service{
		"default policy, zones":  {Key: key, Policy: topology.DefaultPolicy(), Endpoints: many},
		"zero endpoints":         {Key: key, Policy: topology.DefaultPolicy()},
		"least request slow":     {Key: key, Policy: topology.Policy{LB: topology.LeastRequest, ChoiceCount: 4, SlowStart: &topology.SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeightPercent: 10}, Outlier: &outlier}},
		"round robin slow":       {Key: key, Policy: topology.Policy{LB: topology.RoundRobin, SlowStart: &topology.SlowStart{Window: time.Second}}},
		"random":                 {Key: key, Policy: topology.Policy{LB: topology.Random}},
		"weighted round robin":   {Key: key, Policy: topology.Policy{LB: topology.WeightedRoundRobin, SlowStart: &topology.SlowStart{Window: time.Second}}},
		"ring hash":              {Key: key, Policy: topology.Policy{LB: topology.RingHash, HashHeader: "x-tenant"}},
		"strategy":               {Key: key, Policy: topology.Policy{Strategy: `[{"zone_affinity":{}},{"p2c":{}}]`}},
		"labels, weight, host":   {Key: key, Policy: topology.DefaultPolicy(), Endpoints: []topology.Endpoint{labelled}},
		"IPv6":                   {Key: topology.ServiceKey{Namespace: "ns", Name: "v6", Port: 443}, Policy: topology.DefaultPolicy(), Endpoints: []topology.Endpoint{ep("fd00::1", "z", true, true, false), ep("::1", "z", true, true, false)}},
		"outlier extreme values": {Key: key, Policy: topology.Policy{Outlier: &topology.Outlier{MaxEjectionPercent: 500, FailurePercentageThreshold: 300}}},
	}
	for name, svc := range services {
		t.Run(name, func(t *testing.T) {
			r := translate.Resources(svc)
			withCallers := translate.Cluster(svc, translate.WithCallerZones(map[string]float64{"zone-a": 0.6, "zone-b": 0.4, "": 1}))
			all := []validator{r.Cluster, withCallers, r.LoadAssignment, r.RouteConfig}
			for _, l := range r.Listeners {
				all = append(all, l)
			}
			hcm := &hcmpb.HttpConnectionManager{}
			if err := r.Listeners[0].GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			all = append(all, hcm)
			typed := slices.Collect(maps.Values(r.Cluster.GetTypedExtensionProtocolOptions()))
			for _, p := range r.Cluster.GetLoadBalancingPolicy().GetPolicies() {
				typed = append(typed, p.GetTypedExtensionConfig().GetTypedConfig())
			}
			for _, a := range typed {
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, m.(validator))
			}
			if len(r.Listeners) != 2 {
				t.Errorf("got %d listeners, want 2", len(r.Listeners))
			}
			for _, m := range all {
				if err := m.ValidateAll(); err != nil {
					t.Errorf("%s.ValidateAll() = %v", proto.MessageName(m), err)
				}
			}
		})
	}
}
