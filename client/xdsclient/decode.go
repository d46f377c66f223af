package xdsclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fairway-lb/fairway/wire"
)

// The Fairway metadata fields, as error messages name them.
const (
	strategyField    = wire.MetadataNamespace + "." + wire.MetadataStrategy
	callerZonesField = wire.MetadataNamespace + "." + wire.MetadataCallerZones
	labelsField      = wire.MetadataNamespace + "." + wire.MetadataLabels
)

// Cluster is a decoded, validated Cluster resource.
type Cluster struct {
	Name    string
	Version string // version_info of the response that carried it
	// Strategy is the service's Fairway strategy chain, a JSON array of the
	// shape wire.ParseChain checks, from the Fairway metadata
	// (wire.MetadataStrategy); nil when the Cluster has none (the client's
	// default composition applies).
	Strategy json.RawMessage
	// CallerZones is the fraction (0..1) of this Cluster's subscribers in
	// each zone, from the Fairway metadata (wire.MetadataCallerZones); nil when
	// the control plane sends none. Never mutated.
	CallerZones map[string]float64
	// Resource is the Cluster as received. Never mutated.
	Resource *clusterpb.Cluster
}

// Endpoints is a decoded, validated ClusterLoadAssignment.
type Endpoints struct {
	Name      string
	Version   string     // version_info of the response that carried it
	Endpoints []Endpoint // sorted by Address, unique by Address
}

// Endpoint is one LbEndpoint of a ClusterLoadAssignment.
type Endpoint struct {
	Address  string // "IP:PORT" (IPv6 in brackets)
	Zone     string // the locality's zone; "" when unknown
	Hostname string // endpoint.hostname (the pod name); "" when unknown
	Weight   uint32 // load_balancing_weight, >= 1 (1 when unset)
	Health   corepb.HealthStatus
	// Labels from the Fairway metadata (wire.MetadataLabels); nil when none.
	Labels map[string]string
}

// decoded is one resource of a response: its name and either a value or the
// reason it was rejected.
type decoded struct {
	name  string
	raw   proto.Message
	value any
	err   error
}

func (c *Client) decode(typeURL, version string, a *anypb.Any) decoded {
	if a.GetTypeUrl() != typeURL {
		return decoded{err: fmt.Errorf("resource of type %q in a %q response", a.GetTypeUrl(), typeURL)}
	}
	switch typeURL {
	case wire.ClusterType:
		cl := &clusterpb.Cluster{}
		if err := a.UnmarshalTo(cl); err != nil {
			return decoded{err: fmt.Errorf("cannot decode Cluster: %v", err)}
		}
		v, err := decodeCluster(cl, version)
		if err == nil && c.opts.validator != nil {
			err = c.opts.validator(v)
		}
		if err != nil {
			return decoded{name: cl.GetName(), err: fmt.Errorf("Cluster %q: %w", cl.GetName(), err)}
		}
		return decoded{name: v.Name, raw: cl, value: v}
	case wire.EndpointType:
		cla := &endpointpb.ClusterLoadAssignment{}
		if err := a.UnmarshalTo(cla); err != nil {
			return decoded{err: fmt.Errorf("cannot decode ClusterLoadAssignment: %v", err)}
		}
		v, err := decodeEndpoints(cla, version)
		if err != nil {
			return decoded{name: cla.GetClusterName(), err: fmt.Errorf("ClusterLoadAssignment %q: %w", cla.GetClusterName(), err)}
		}
		return decoded{name: v.Name, raw: cla, value: v}
	default:
		return decoded{err: fmt.Errorf("unsupported type %q", typeURL)}
	}
}

func decodeCluster(cl *clusterpb.Cluster, version string) (Cluster, error) {
	if cl.GetName() == "" {
		return Cluster{}, errors.New("no name")
	}
	v := Cluster{Name: cl.GetName(), Version: version, Resource: cl}
	md := cl.GetMetadata().GetFilterMetadata()[wire.MetadataNamespace]
	zones, err := decodeCallerZones(md)
	if err != nil {
		return Cluster{}, err
	}
	v.CallerZones = zones
	sv, ok := md.GetFields()[wire.MetadataStrategy]
	if !ok {
		return v, nil
	}
	switch k := sv.GetKind().(type) {
	case *structpb.Value_StringValue:
		s := strings.TrimSpace(k.StringValue)
		if s == "" {
			return v, nil
		}
		v.Strategy = json.RawMessage(s)
	case *structpb.Value_ListValue:
		b, err := k.ListValue.MarshalJSON()
		if err != nil {
			return Cluster{}, fmt.Errorf("metadata %s: %v", strategyField, err)
		}
		v.Strategy = b
	case *structpb.Value_NullValue:
		return v, nil
	default:
		return Cluster{}, fmt.Errorf("metadata %s is neither a JSON string nor a list", strategyField)
	}
	if _, err := wire.ParseChain(v.Strategy); err != nil {
		return Cluster{}, fmt.Errorf("metadata %s: %w", strategyField, err)
	}
	return v, nil
}

// decodeCallerZones decodes md's wire.MetadataCallerZones: an object mapping
// non-empty zone names to finite numbers within [0, 1]. Absent or null: nil.
func decodeCallerZones(md *structpb.Struct) (map[string]float64, error) {
	cv, ok := md.GetFields()[wire.MetadataCallerZones]
	if !ok {
		return nil, nil
	}
	if _, null := cv.GetKind().(*structpb.Value_NullValue); null {
		return nil, nil
	}
	st := cv.GetStructValue()
	if st == nil {
		return nil, fmt.Errorf("metadata %s is not an object", callerZonesField)
	}
	zones := make(map[string]float64, len(st.GetFields()))
	for z, fv := range st.GetFields() {
		if z == "" {
			return nil, fmt.Errorf("metadata %s has an empty zone name", callerZonesField)
		}
		n, ok := fv.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return nil, fmt.Errorf("metadata %s[%q] is not a number", callerZonesField, z)
		}
		f := n.NumberValue
		if math.IsNaN(f) || f < 0 || f > 1 {
			return nil, fmt.Errorf("metadata %s[%q] = %v is not within [0, 1]", callerZonesField, z, f)
		}
		zones[z] = f
	}
	return zones, nil
}

func decodeEndpoints(cla *endpointpb.ClusterLoadAssignment, version string) (Endpoints, error) {
	if cla.GetClusterName() == "" {
		return Endpoints{}, errors.New("no cluster_name")
	}
	v := Endpoints{Name: cla.GetClusterName(), Version: version}
	seen := map[string]bool{}
	for li, loc := range cla.GetEndpoints() {
		zone := loc.GetLocality().GetZone()
		for ei, lbe := range loc.GetLbEndpoints() {
			ep, err := decodeEndpoint(lbe, zone)
			if err != nil {
				return Endpoints{}, fmt.Errorf("locality %d (zone %q) endpoint %d: %w", li, zone, ei, err)
			}
			if seen[ep.Address] {
				return Endpoints{}, fmt.Errorf("locality %d (zone %q) endpoint %d: duplicate address %s", li, zone, ei, ep.Address)
			}
			seen[ep.Address] = true
			v.Endpoints = append(v.Endpoints, ep)
		}
	}
	slices.SortFunc(v.Endpoints, func(a, b Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return v, nil
}

func decodeEndpoint(lbe *endpointpb.LbEndpoint, zone string) (Endpoint, error) {
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return Endpoint{}, errors.New("no socket address")
	}
	ip := net.ParseIP(sa.GetAddress())
	if ip == nil {
		return Endpoint{}, fmt.Errorf("address %q is not an IP literal", sa.GetAddress())
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return Endpoint{}, fmt.Errorf("address %s: port %d is not in 1-65535", sa.GetAddress(), port)
	}
	ep := Endpoint{
		Address:  net.JoinHostPort(ip.String(), strconv.Itoa(int(port))),
		Zone:     zone,
		Hostname: lbe.GetEndpoint().GetHostname(),
		Weight:   1,
		Health:   lbe.GetHealthStatus(),
	}
	if w := lbe.GetLoadBalancingWeight(); w != nil {
		if w.GetValue() == 0 {
			return Endpoint{}, fmt.Errorf("address %s: load_balancing_weight is 0", ep.Address)
		}
		ep.Weight = w.GetValue()
	}
	labels, ok := lbe.GetMetadata().GetFilterMetadata()[wire.MetadataNamespace].GetFields()[wire.MetadataLabels]
	if ok {
		st := labels.GetStructValue()
		if st == nil {
			return Endpoint{}, fmt.Errorf("address %s: metadata %s is not an object", ep.Address, labelsField)
		}
		ep.Labels = make(map[string]string, len(st.GetFields()))
		for k, lv := range st.GetFields() {
			s, ok := lv.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return Endpoint{}, fmt.Errorf("address %s: label %q is not a string", ep.Address, k)
			}
			ep.Labels[k] = s.StringValue
		}
	}
	return ep, nil
}
