// Package topology is Fairway's Kubernetes-free and Envoy-free model of the
// services a control plane serves: each service port with its endpoints and its
// balancing policy, gathered into immutable, versioned snapshots.
//
// Data flows one way: a source (Kubernetes informers, a YAML file) builds
// Services, gathers them into a Snapshot and hands the Snapshot to a Sink (the
// xDS server). Nothing here is mutated after it has been handed over: a change
// is a new Snapshot that shares the unchanged *Service values of the previous
// one.
package topology

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fairway-lb/fairway/wire"
)

// ServiceKey names one port of one Kubernetes Service. It is the wire
// contract's key (package wire), whose ResourceName and FQDNResourceName are
// the xDS resource names of the service port.
type ServiceKey = wire.ServiceKey

// Endpoint is one backend (pod) address serving a service port.
type Endpoint struct {
	Address  string // IPv4 or IPv6 literal
	Port     int32  // the port the pod listens on
	Zone     string // topology.kubernetes.io/zone; "" when unknown
	Node     string // node name; "" when unknown
	Hostname string // pod name (targetRef) or hostname; "" when unknown

	Ready       bool
	Serving     bool
	Terminating bool

	// Weight is the endpoint's relative capacity, >= 1 (default 1).
	Weight uint32
	// Labels are identifying metadata such as a shard. Never mutated.
	Labels map[string]string
}

// Key is "ADDRESS:PORT" in host:port form (IPv6 in brackets).
func (e Endpoint) Key() string {
	if strings.Contains(e.Address, ":") {
		return "[" + e.Address + "]:" + strconv.Itoa(int(e.Port))
	}
	return e.Address + ":" + strconv.Itoa(int(e.Port))
}

// Equal reports whether two endpoints carry the same data.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Address == o.Address && e.Port == o.Port && e.Zone == o.Zone &&
		e.Node == o.Node && e.Hostname == o.Hostname && e.Ready == o.Ready &&
		e.Serving == o.Serving && e.Terminating == o.Terminating &&
		e.Weight == o.Weight && maps.Equal(e.Labels, o.Labels)
}

// LBPolicy is the standard xDS balancing policy that Envoy and proxyless gRPC
// clients apply to a service.
type LBPolicy string

const (
	LeastRequest LBPolicy = "least_request"
	RoundRobin   LBPolicy = "round_robin"
	Random       LBPolicy = "random"
	// WeightedRoundRobin is gRFC A58's client-side weighted round robin:
	// weights from the endpoints' ORCA utilization reports.
	WeightedRoundRobin LBPolicy = "weighted_round_robin"
	// RingHash is gRFC A42's consistent hashing on a request header
	// (Policy.HashHeader).
	RingHash LBPolicy = "ring_hash"
)

// DefaultHashHeader is the request header ring_hash hashes on when the
// service does not name one.
const DefaultHashHeader = "x-fairway-shard"

// SlowStart asks Envoy (and the Fairway client's slow_start strategy) to ramp a
// new endpoint's weight: weight × max(MinWeightPercent/100, (t/Window)^(1/Aggression)).
type SlowStart struct {
	Window           time.Duration
	Aggression       float64 // > 0, default 1
	MinWeightPercent float64 // 0-100, default 10
}

// Outlier is passive outlier detection with failure-percentage settings, as
// both Envoy and grpc-go read it.
type Outlier struct {
	Interval                   time.Duration // default 1s
	BaseEjectionTime           time.Duration // default 30s
	MaxEjectionPercent         uint32        // default 20
	FailurePercentageThreshold uint32        // default 50
	MinimumHosts               uint32        // default 3
	RequestVolume              uint32        // default 20
}

// WRR tunes weighted_round_robin (gRFC A58). A zero field keeps the
// client's default (A58: blackout 10 s, weight update period 1 s).
type WRR struct {
	// BlackoutPeriod is how long an endpoint must have reported load before
	// its weight counts; until then it gets the mean weight.
	BlackoutPeriod time.Duration
	// WeightUpdatePeriod is how often a client recomputes the weights
	// (grpc-go clamps it to at least 100 ms).
	WeightUpdatePeriod time.Duration
}

// Policy is a service's balancing policy.
type Policy struct {
	LB          LBPolicy
	ChoiceCount uint32     // least_request only; >= 2, default 2
	SlowStart   *SlowStart // nil: off
	Outlier     *Outlier   // nil: off
	WRR         *WRR       // weighted_round_robin only; nil: the clients' defaults
	// HashHeader is the request header ring_hash hashes on; "" means
	// DefaultHashHeader. Other policies ignore it.
	HashHeader string
	// Strategy is the Fairway client's strategy chain as JSON (see
	// docs/annotations.md); "" means the client's default composition.
	Strategy string
}

// DefaultOutlier returns the outlier detection settings used when a service
// does not say otherwise.
func DefaultOutlier() Outlier {
	return Outlier{
		Interval:                   time.Second,
		BaseEjectionTime:           30 * time.Second,
		MaxEjectionPercent:         20,
		FailurePercentageThreshold: 50,
		MinimumHosts:               3,
		RequestVolume:              20,
	}
}

// DefaultPolicy is least request with two choices and outlier detection on.
func DefaultPolicy() Policy {
	o := DefaultOutlier()
	return Policy{LB: LeastRequest, ChoiceCount: 2, Outlier: &o}
}

// Equal reports whether two policies are the same.
func (p Policy) Equal(o Policy) bool {
	if p.LB != o.LB || p.ChoiceCount != o.ChoiceCount || p.Strategy != o.Strategy || p.HashHeader != o.HashHeader {
		return false
	}
	if (p.SlowStart == nil) != (o.SlowStart == nil) || (p.SlowStart != nil && *p.SlowStart != *o.SlowStart) {
		return false
	}
	if (p.Outlier == nil) != (o.Outlier == nil) || (p.Outlier != nil && *p.Outlier != *o.Outlier) {
		return false
	}
	if (p.WRR == nil) != (o.WRR == nil) || (p.WRR != nil && *p.WRR != *o.WRR) {
		return false
	}
	return true
}

// Export says which namespaces' clients may see a service. A service is
// always visible in its own namespace. The zero value exports it to every
// namespace (ExportAll), what a source that knows no visibility means.
type Export struct {
	// Limited restricts the service to its own namespace and Namespaces;
	// false: every namespace.
	Limited bool
	// Namespaces are the other namespaces that see it, sorted and unique;
	// only with Limited.
	Namespaces []string
}

// ExportAll exports a service to every namespace (the zero Export).
func ExportAll() Export { return Export{} }

// ExportOwn keeps a service visible in its own namespace only.
func ExportOwn() Export { return Export{Limited: true} }

// Visible reports whether a client in namespace ns sees a service of
// namespace own exported by e.
func (e Export) Visible(own, ns string) bool {
	if !e.Limited || ns == own {
		return true
	}
	_, found := slices.BinarySearch(e.Namespaces, ns)
	return found
}

// Equal reports whether two exports are the same.
func (e Export) Equal(o Export) bool {
	return e.Limited == o.Limited && slices.Equal(e.Namespaces, o.Namespaces)
}

// String is the export as the fairway.io/export-to annotation writes it:
// "*", or "." followed by the other namespaces.
func (e Export) String() string {
	if !e.Limited {
		return "*"
	}
	return strings.Join(append([]string{"."}, e.Namespaces...), ",")
}

// Service is one service port with its endpoints. Immutable once built.
type Service struct {
	Key    ServiceKey
	Policy Policy
	// Export is who may see the service (xDS clients by namespace).
	Export Export
	// Endpoints are sorted by Key() and unique by Key().
	Endpoints []Endpoint
}

// Visible reports whether a client in namespace ns sees s.
func (s *Service) Visible(ns string) bool { return s.Export.Visible(s.Key.Namespace, ns) }

// SortEndpoints sorts endpoints by Key(), the order Service.Endpoints keeps.
func SortEndpoints(eps []Endpoint) {
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Key(), b.Key()) })
}

// Equal reports whether two services carry the same data.
func (s *Service) Equal(o *Service) bool {
	if s == o {
		return true
	}
	if s == nil || o == nil || s.Key != o.Key || !s.Policy.Equal(o.Policy) || !s.Export.Equal(o.Export) {
		return false
	}
	return slices.EqualFunc(s.Endpoints, o.Endpoints, Endpoint.Equal)
}

// Snapshot is an immutable, versioned view of every service a source knows.
type Snapshot struct {
	version  uint64
	changed  time.Time
	services map[ServiceKey]*Service
}

// NewSnapshot gathers services into a snapshot. changed is when the source
// observed the change this snapshot reflects (for change-to-push latency).
// The services must not be mutated afterwards.
func NewSnapshot(version uint64, changed time.Time, services []*Service) *Snapshot {
	m := make(map[ServiceKey]*Service, len(services))
	for _, s := range services {
		m[s.Key] = s
	}
	return &Snapshot{version: version, changed: changed, services: m}
}

// With returns a new snapshot that replaces or adds the given services and
// drops the removed keys, sharing everything else with s. s may be nil.
func (s *Snapshot) With(version uint64, changed time.Time, upsert []*Service, remove []ServiceKey) *Snapshot {
	var m map[ServiceKey]*Service
	if s != nil {
		m = maps.Clone(s.services)
	}
	if m == nil {
		m = make(map[ServiceKey]*Service, len(upsert))
	}
	for _, k := range remove {
		delete(m, k)
	}
	for _, svc := range upsert {
		m[svc.Key] = svc
	}
	return &Snapshot{version: version, changed: changed, services: m}
}

// Version is the source's monotonically increasing snapshot version.
func (s *Snapshot) Version() uint64 { return s.version }

// Changed is when the source observed the change this snapshot reflects.
func (s *Snapshot) Changed() time.Time { return s.changed }

// Len is the number of service ports.
func (s *Snapshot) Len() int { return len(s.services) }

// Service returns the service with key k.
func (s *Snapshot) Service(k ServiceKey) (*Service, bool) {
	svc, ok := s.services[k]
	return svc, ok
}

// Keys returns every service key, sorted by resource name.
func (s *Snapshot) Keys() []ServiceKey {
	keys := slices.Collect(maps.Keys(s.services))
	slices.SortFunc(keys, func(a, b ServiceKey) int { return strings.Compare(a.ResourceName(), b.ResourceName()) })
	return keys
}

// All iterates over the services in no particular order.
func (s *Snapshot) All() func(yield func(*Service) bool) {
	return func(yield func(*Service) bool) {
		for _, svc := range s.services {
			if !yield(svc) {
				return
			}
		}
	}
}

// Sink receives snapshots from a source. Update is called from the source's
// goroutine, one call at a time, with versions that only grow; it must not
// block for long (the xDS server only records the snapshot and schedules a
// push). A source calls Update for the first time only once it knows the whole
// world (e.g. after its informers have synced), so a Sink never mistakes a
// source that is still starting for an empty one.
type Sink interface {
	Update(s *Snapshot)
}

// Source produces snapshots. Run blocks until ctx is done or the source fails
// for good, calling sink.Update with every new state; a bad input (a malformed
// file, an invalid object) is reported and skipped and never becomes an empty
// snapshot.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}
