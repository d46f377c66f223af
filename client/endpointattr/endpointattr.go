// Package endpointattr carries Fairway's per-endpoint metadata (zone, weight,
// labels, health, first-seen time) on resolver.Endpoint attributes, and the
// caller's own zone and the service's callers per zone on resolver.State
// attributes. The resolver sets them; the
// balancer and strategies read them. Typed keys, as grpc-go's
// experimental/balancer/weight does.
package endpointattr

import (
	"maps"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Health is an endpoint's health as the control plane serves it.
type Health uint8

const (
	// Healthy endpoints take traffic.
	Healthy Health = iota
	// Draining endpoints are terminating but still serving: no new traffic.
	Draining
	// Unhealthy endpoints take no traffic.
	Unhealthy
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Draining:
		return "draining"
	default:
		return "unhealthy"
	}
}

// Info is what Fairway knows of one endpoint. Labels is never mutated.
type Info struct {
	Zone      string
	Hostname  string // pod name, when known
	Weight    uint32 // >= 1
	Labels    map[string]string
	Health    Health
	FirstSeen time.Time // when this client first saw the endpoint
}

// Equal lets attributes compare Info values.
func (i Info) Equal(o any) bool {
	oi, ok := o.(Info)
	return ok && i.Zone == oi.Zone && i.Hostname == oi.Hostname && i.Weight == oi.Weight &&
		i.Health == oi.Health && i.FirstSeen.Equal(oi.FirstSeen) && maps.Equal(i.Labels, oi.Labels)
}

type infoKey struct{}
type localZoneKey struct{}
type callerZonesKey struct{}

// callerZones wraps the map so that attributes can compare it.
type callerZones map[string]float64

// Equal lets attributes compare callerZones values.
func (c callerZones) Equal(o any) bool {
	oc, ok := o.(callerZones)
	return ok && maps.Equal(c, oc)
}

// Set returns a copy of ep carrying info.
func Set(ep resolver.Endpoint, info Info) resolver.Endpoint {
	ep.Attributes = ep.Attributes.WithValue(infoKey{}, info)
	return ep
}

// FromEndpoint returns the Info set on ep, if any.
func FromEndpoint(ep resolver.Endpoint) (Info, bool) {
	info, ok := ep.Attributes.Value(infoKey{}).(Info)
	return info, ok
}

// SetLocalZone returns attrs with the caller's zone (may be "": unknown).
func SetLocalZone(attrs *attributes.Attributes, zone string) *attributes.Attributes {
	return attrs.WithValue(localZoneKey{}, zone)
}

// LocalZone returns the caller's zone set on attrs; "" when unknown.
func LocalZone(attrs *attributes.Attributes) string {
	z, _ := attrs.Value(localZoneKey{}).(string)
	return z
}

// SetCallerZones returns attrs with the fraction of the service's callers in
// each zone, as the control plane serves it (nil: unknown). zones must not be
// mutated afterwards.
func SetCallerZones(attrs *attributes.Attributes, zones map[string]float64) *attributes.Attributes {
	return attrs.WithValue(callerZonesKey{}, callerZones(zones))
}

// CallerZones returns the callers per zone set on attrs; nil when unknown.
// The map is shared: read it, never modify it.
func CallerZones(attrs *attributes.Attributes) map[string]float64 {
	z, _ := attrs.Value(callerZonesKey{}).(callerZones)
	return z
}
