// Package translate turns Fairway's topology model into the xDS resources a
// proxyless gRPC client or an Envoy needs to reach a service port. It holds
// pure functions only: no I/O, no gRPC streams, no clocks.
//
// For a service port named N = topology.ServiceKey.ResourceName() it produces
// (see docs/design.md):
//
//   - a ClusterLoadAssignment N with one locality per zone (sorted by zone; the
//     empty zone is a locality with an empty zone), every locality carrying a
//     load_balancing_weight (the sum of its healthy endpoints' weights, at
//     least 1);
//   - a Cluster N of type EDS over ADS with HTTP/2 upstream (Envoy would
//     speak HTTP/1.1 to the pods otherwise), whose balancing policy is carried
//     in load_balancing_policy, the field every current client reads (and in
//     lb_policy for older ones; see "Balancing policy" below), and whose
//     Fairway metadata (filter_metadata[wire.MetadataNamespace]) carries the
//     strategy chain (wire.MetadataStrategy) and, when given with
//     WithCallerZones, the callers' distribution over zones
//     (wire.MetadataCallerZones);
//   - two Listeners, N and the FQDN form, each with an api_listener
//     HttpConnectionManager that fetches RouteConfiguration N over ADS;
//   - a RouteConfiguration N routing every request to Cluster N (hashing on a
//     request header for ring_hash).
//
// Health mapping: a ready endpoint is HEALTHY; an endpoint that is not ready
// but serving and terminating is DRAINING; anything else is UNHEALTHY.
// Unhealthy and draining endpoints are kept in the assignment, so Envoy and
// the Fairway client see that the pod exists, while grpc-go and Envoy send it
// no new requests.
//
// Balancing policy: Cluster.load_balancing_policy lists the intended policy
// first and RoundRobin last. A client takes the first policy of the list it
// implements and NACKs the Cluster when it implements none (gRFC A52);
// RoundRobin is the one policy every xDS client implements (grpc-go,
// grpc-java, C-core, grpc-js, Envoy). least_request becomes
// envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest
// then RoundRobin: grpc-go, grpc-java and Envoy balance by least request,
// C-core and grpc-js (which lack it) by round robin. random becomes
// ...random.v3.Random then RoundRobin: only Envoy has Random. round_robin
// becomes RoundRobin alone. weighted_round_robin becomes gRFC A58's
// ...client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin then
// RoundRobin: every client has it; it weights endpoints by their ORCA
// utilization reports and, without reports, spreads like round robin; the
// policy's WRR tuning sets its blackout and weight update periods.
// ring_hash becomes gRFC A42's ...ring_hash.v3.RingHash (XX_HASH) then
// RoundRobin, and its RouteConfiguration hashes on a request header. Every
// entry carries slow_start_config when the policy asks for slow start and the
// message has the field; Envoy honours it, gRPC clients ignore it. The legacy
// lb_policy field is what a client that ignores load_balancing_policy applies
// (older C-core such as 1.51 without GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG=true):
// RING_HASH for ring_hash, ROUND_ROBIN, the list's last entry, otherwise;
// grpc-go NACKs a value it lacks even when load_balancing_policy is set.
// docs/clients.md has the table of which client applies which policy.
package translate

import (
	"cmp"
	"math"
	"slices"
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

// ConnectTimeout is the connect timeout set on every Cluster.
const ConnectTimeout = 5 * time.Second

// Extension names of the load balancing policies in load_balancing_policy.
const (
	leastRequestName = "envoy.load_balancing_policies.least_request"
	roundRobinName   = "envoy.load_balancing_policies.round_robin"
	randomName       = "envoy.load_balancing_policies.random"
	wrrName          = "envoy.load_balancing_policies.client_side_weighted_round_robin"
	ringHashName     = "envoy.load_balancing_policies.ring_hash"
	routerFilterName = "envoy.filters.http.router"
	// httpProtocolOptionsName is the key of an Envoy Cluster's upstream HTTP
	// options in typed_extension_protocol_options.
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// ServiceResources are all the xDS resources of one service port.
type ServiceResources struct {
	Cluster        *clusterpb.Cluster
	LoadAssignment *endpointpb.ClusterLoadAssignment
	// Listeners are the listener under the short name, then the one under
	// the FQDN name.
	Listeners   []*listenerpb.Listener
	RouteConfig *routepb.RouteConfiguration
}

// Resources translates svc into all of its xDS resources.
func Resources(svc *topology.Service) ServiceResources {
	return ServiceResources{
		Cluster:        Cluster(svc),
		LoadAssignment: LoadAssignment(svc),
		Listeners:      Listeners(svc),
		RouteConfig:    RouteConfig(svc),
	}
}

// HealthStatus maps an endpoint's conditions to its xDS health status.
func HealthStatus(ep topology.Endpoint) corepb.HealthStatus {
	switch {
	case ep.Ready:
		return corepb.HealthStatus_HEALTHY
	case ep.Serving && ep.Terminating:
		return corepb.HealthStatus_DRAINING
	default:
		return corepb.HealthStatus_UNHEALTHY
	}
}

// LoadAssignment translates svc's endpoints into its ClusterLoadAssignment.
func LoadAssignment(svc *topology.Service) *endpointpb.ClusterLoadAssignment {
	byZone := map[string]*endpointpb.LocalityLbEndpoints{}
	weights := map[string]uint32{}
	for _, ep := range svc.Endpoints {
		loc, ok := byZone[ep.Zone]
		if !ok {
			loc = &endpointpb.LocalityLbEndpoints{Locality: &corepb.Locality{Zone: ep.Zone}}
			byZone[ep.Zone] = loc
		}
		w := max(ep.Weight, 1)
		hs := HealthStatus(ep)
		if hs == corepb.HealthStatus_HEALTHY {
			weights[ep.Zone] += w
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(ep, w, hs))
	}
	localities := make([]*endpointpb.LocalityLbEndpoints, 0, len(byZone))
	for zone, loc := range byZone {
		loc.LoadBalancingWeight = wrapperspb.UInt32(max(weights[zone], 1))
		localities = append(localities, loc)
	}
	slices.SortFunc(localities, func(a, b *endpointpb.LocalityLbEndpoints) int {
		return cmp.Compare(a.GetLocality().GetZone(), b.GetLocality().GetZone())
	})
	return &endpointpb.ClusterLoadAssignment{
		ClusterName: svc.Key.ResourceName(),
		Endpoints:   localities,
	}
}

func lbEndpoint(ep topology.Endpoint, weight uint32, hs corepb.HealthStatus) *endpointpb.LbEndpoint {
	lbe := &endpointpb.LbEndpoint{
		HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
			Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
				Protocol:      corepb.SocketAddress_TCP,
				Address:       ep.Address,
				PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(ep.Port)},
			}}},
			Hostname: ep.Hostname,
		}},
		HealthStatus:        hs,
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
	if len(ep.Labels) > 0 {
		labels := make(map[string]any, len(ep.Labels))
		for k, v := range ep.Labels {
			labels[k] = v
		}
		lbe.Metadata = fairwayMetadata(map[string]any{wire.MetadataLabels: labels})
	}
	return lbe
}

func fairwayMetadata(fields map[string]any) *corepb.Metadata {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		// Only strings, numbers and maps of them reach here.
		panic("fairway/translate: building metadata: " + err.Error())
	}
	return &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: s}}
}

func adsConfigSource() *corepb.ConfigSource {
	return &corepb.ConfigSource{
		ResourceApiVersion:    corepb.ApiVersion_V3,
		ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
	}
}

// A ClusterOption adds an optional input to Cluster.
type ClusterOption func(*clusterOptions)

type clusterOptions struct {
	callerZones map[string]float64
}

// WithCallerZones puts the callers' distribution over zones into the
// Cluster's Fairway metadata under wire.MetadataCallerZones: fractions maps a
// zone name to the fraction of the callers in it (the xDS streams subscribed
// to the Cluster whose node states that zone and declares
// wire.CallerZonesFeature; callers that do not, proxyless gRPC and Envoy,
// spread their requests over every zone by weight, which needs no
// correction). Fractions are clamped to [0, 1] and rounded to 3 decimals; the
// empty zone and NaN are left out; nil or empty fractions add nothing.
func WithCallerZones(fractions map[string]float64) ClusterOption {
	return func(o *clusterOptions) { o.callerZones = fractions }
}

// Cluster translates svc into its Cluster: EDS over ADS with the service's
// balancing policy, outlier detection and Fairway strategy chain, plus the
// optional inputs given in opts.
func Cluster(svc *topology.Service, opts ...ClusterOption) *clusterpb.Cluster {
	var o clusterOptions
	for _, opt := range opts {
		opt(&o)
	}
	name := svc.Key.ResourceName()
	c := &clusterpb.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS},
		EdsClusterConfig: &clusterpb.Cluster_EdsClusterConfig{
			EdsConfig:   adsConfigSource(),
			ServiceName: name,
		},
		ConnectTimeout:      durationpb.New(ConnectTimeout),
		LbPolicy:            legacyLBPolicy(svc.Policy),
		LoadBalancingPolicy: loadBalancingPolicy(svc.Policy),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			httpProtocolOptionsName: http2Upstream(),
		},
	}
	if o := svc.Policy.Outlier; o != nil {
		c.OutlierDetection = outlierDetection(*o)
	}
	md := map[string]any{}
	if svc.Policy.Strategy != "" {
		md[wire.MetadataStrategy] = svc.Policy.Strategy
	}
	zones := make(map[string]any, len(o.callerZones))
	for zone, f := range o.callerZones {
		if zone == "" || math.IsNaN(f) {
			continue
		}
		zones[zone] = math.Round(min(max(f, 0), 1)*1000) / 1000
	}
	if len(zones) > 0 {
		md[wire.MetadataCallerZones] = zones
	}
	if len(md) > 0 {
		c.Metadata = fairwayMetadata(md)
	}
	return c
}

// http2Upstream tells an Envoy to speak HTTP/2 to the endpoints, as gRPC
// needs (Envoy's default is HTTP/1.1). gRPC clients ignore it (grpc-go,
// grpc-js) or read only its common_http_protocol_options (C-core).
func http2Upstream() *anypb.Any {
	return mustAny(&httpupstreampb.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpupstreampb.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corepb.Http2ProtocolOptions{},
				},
			},
		},
	})
}

// loadBalancingPolicy lists p's intended policy first and RoundRobin, the
// policy every client implements, last (see the package comment).
func loadBalancingPolicy(p topology.Policy) *clusterpb.LoadBalancingPolicy {
	fallback := lbPolicy(roundRobinName, &roundrobinpb.RoundRobin{SlowStartConfig: slowStart(p.SlowStart)})
	var intended *clusterpb.LoadBalancingPolicy_Policy
	switch p.LB {
	case topology.RoundRobin:
		return &clusterpb.LoadBalancingPolicy{Policies: []*clusterpb.LoadBalancingPolicy_Policy{fallback}}
	case topology.Random:
		intended = lbPolicy(randomName, &randompb.Random{})
	case topology.WeightedRoundRobin:
		intended = lbPolicy(wrrName, wrr(p))
	case topology.RingHash:
		// gRPC clients accept XX_HASH only, not DEFAULT_HASH (which Envoy
		// reads as XX_HASH).
		intended = lbPolicy(ringHashName, &ringhashpb.RingHash{HashFunction: ringhashpb.RingHash_XX_HASH})
	default: // topology.LeastRequest and unset
		intended = lbPolicy(leastRequestName, &leastrequestpb.LeastRequest{
			ChoiceCount:     wrapperspb.UInt32(max(p.ChoiceCount, 2)),
			SlowStartConfig: slowStart(p.SlowStart),
		})
	}
	return &clusterpb.LoadBalancingPolicy{Policies: []*clusterpb.LoadBalancingPolicy_Policy{intended, fallback}}
}

// legacyLBPolicy is the Cluster's lb_policy, for clients that read only this
// field and know only ROUND_ROBIN and RING_HASH there: RING_HASH for
// ring_hash (the field's default ring_hash_lb_config is XX_HASH, which every
// gRPC client accepts), so that such a client still hashes on the route's
// header, and otherwise ROUND_ROBIN, the last entry of loadBalancingPolicy's
// list. Clients that read load_balancing_policy ignore it, but grpc-go checks
// it first and NACKs a value it lacks.
func legacyLBPolicy(p topology.Policy) clusterpb.Cluster_LbPolicy {
	if p.LB == topology.RingHash {
		return clusterpb.Cluster_RING_HASH
	}
	return clusterpb.Cluster_ROUND_ROBIN
}

// wrr is weighted_round_robin's config: the policy's tuning where set, the
// clients' gRFC A58 defaults otherwise (per-call ORCA reports, no
// out-of-band stream).
func wrr(p topology.Policy) *wrrpb.ClientSideWeightedRoundRobin {
	m := &wrrpb.ClientSideWeightedRoundRobin{SlowStartConfig: slowStart(p.SlowStart)}
	if w := p.WRR; w != nil {
		if w.BlackoutPeriod > 0 {
			m.BlackoutPeriod = durationpb.New(w.BlackoutPeriod)
		}
		if w.WeightUpdatePeriod > 0 {
			m.WeightUpdatePeriod = durationpb.New(w.WeightUpdatePeriod)
		}
	}
	return m
}

func lbPolicy(name string, m proto.Message) *clusterpb.LoadBalancingPolicy_Policy {
	return &clusterpb.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corepb.TypedExtensionConfig{
		Name:        name,
		TypedConfig: mustAny(m),
	}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// Marshalling a well-formed generated message does not fail.
		panic("fairway/translate: marshalling " + string(proto.MessageName(m)) + ": " + err.Error())
	}
	return a
}

func slowStart(s *topology.SlowStart) *lbcommonpb.SlowStartConfig {
	if s == nil {
		return nil
	}
	cfg := &lbcommonpb.SlowStartConfig{SlowStartWindow: durationpb.New(s.Window)}
	if s.Aggression > 0 {
		cfg.Aggression = &corepb.RuntimeDouble{DefaultValue: s.Aggression, RuntimeKey: "fairway.slow_start.aggression"}
	}
	if s.MinWeightPercent > 0 {
		cfg.MinWeightPercent = &typepb.Percent{Value: s.MinWeightPercent}
	}
	return cfg
}

func outlierDetection(o topology.Outlier) *clusterpb.OutlierDetection {
	od := &clusterpb.OutlierDetection{
		MaxEjectionPercent:                 wrapperspb.UInt32(min(o.MaxEjectionPercent, 100)),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		EnforcingFailurePercentage:         wrapperspb.UInt32(100),
		FailurePercentageThreshold:         wrapperspb.UInt32(min(o.FailurePercentageThreshold, 100)),
		FailurePercentageMinimumHosts:      wrapperspb.UInt32(o.MinimumHosts),
		FailurePercentageRequestVolume:     wrapperspb.UInt32(o.RequestVolume),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
	}
	// A zero duration is invalid in xDS; leave it out and let the client's
	// default apply.
	if o.Interval > 0 {
		od.Interval = durationpb.New(o.Interval)
	}
	if o.BaseEjectionTime > 0 {
		od.BaseEjectionTime = durationpb.New(o.BaseEjectionTime)
	}
	return od
}

// Listeners translates svc into its two Listeners, under the short name and
// under the FQDN name, both routing through RouteConfiguration
// svc.Key.ResourceName().
func Listeners(svc *topology.Service) []*listenerpb.Listener {
	return []*listenerpb.Listener{
		listener(svc.Key.ResourceName(), svc.Key.ResourceName()),
		listener(svc.Key.FQDNResourceName(), svc.Key.ResourceName()),
	}
}

func listener(name, routeName string) *listenerpb.Listener {
	hcm := &hcmpb.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmpb.HttpConnectionManager_Rds{Rds: &hcmpb.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmpb.HttpFilter{{
			Name:       routerFilterName,
			ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerpb.Router{})},
		}},
	}
	return &listenerpb.Listener{
		Name:        name,
		ApiListener: &listenerpb.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// RouteConfig translates svc into its RouteConfiguration: one virtual host
// for every domain, every path to Cluster svc.Key.ResourceName(). For
// ring_hash the route hashes on the request header svc.Policy.HashHeader
// (topology.DefaultHashHeader when empty); a request without the header gets
// a random hash (gRFC A42).
func RouteConfig(svc *topology.Service) *routepb.RouteConfiguration {
	name := svc.Key.ResourceName()
	action := &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: name}}
	if svc.Policy.LB == topology.RingHash {
		action.HashPolicy = []*routepb.RouteAction_HashPolicy{{
			PolicySpecifier: &routepb.RouteAction_HashPolicy_Header_{Header: &routepb.RouteAction_HashPolicy_Header{
				HeaderName: cmp.Or(svc.Policy.HashHeader, topology.DefaultHashHeader),
			}},
		}}
	}
	return &routepb.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routepb.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes: []*routepb.Route{{
				Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: ""}},
				Action: &routepb.Route_Route{Route: action},
			}},
		}},
	}
}
