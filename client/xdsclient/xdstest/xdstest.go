// Package xdstest runs go-control-plane's real ADS server on loopback for
// tests of the Fairway client: one LinearCache per type behind a MuxCache, as
// the control plane serves them, recording every request it receives.
package xdstest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fairway-lb/fairway/wire"
)

// Timeout bounds every wait of the helpers.
const Timeout = 10 * time.Second

// Server is a running ADS server. Set resources with Clusters and Endpoints
// (UpdateResource, DeleteResource).
type Server struct {
	Addr      string
	Clusters  *cachev3.LinearCache
	Endpoints *cachev3.LinearCache

	grpc   *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	requests []*discoverypb.DiscoveryRequest // guarded by mu
	streams  int                             // streams opened; guarded by mu
	changed  chan struct{}
}

// Start serves on addr ("127.0.0.1:0" for any port); the server stops at the
// end of the test, or earlier with Stop.
func Start(t testing.TB, addr string) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("xdstest: listen: %v", err)
	}
	s := &Server{
		Addr:      lis.Addr().String(),
		Clusters:  cachev3.NewLinearCache(resourcev3.ClusterType),
		Endpoints: cachev3.NewLinearCache(resourcev3.EndpointType),
		// The control plane's keepalive enforcement (xdsserver.KeepaliveMinTime),
		// so that the client's keepalive pings are welcome as they are there.
		grpc:    grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true})),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{resourcev3.ClusterType: s.Clusters, resourcev3.EndpointType: s.Endpoints},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cb := serverv3.CallbackFuncs{StreamOpenFunc: func(context.Context, int64, string) error {
		s.mu.Lock()
		s.streams++
		s.mu.Unlock()
		return nil
	}, StreamRequestFunc: func(_ int64, r *discoverypb.DiscoveryRequest) error {
		s.mu.Lock()
		s.requests = append(s.requests, proto.Clone(r).(*discoverypb.DiscoveryRequest))
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
		return nil
	}}
	discoverypb.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(ctx, mux, cb))
	go func() { defer close(s.done); _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server and closes its streams. Idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cancel()
		s.grpc.Stop()
		<-s.done
	})
}

// WaitRequest waits for a request (already received or to come) matching ok.
func (s *Server) WaitRequest(t testing.TB, what string, ok func(*discoverypb.DiscoveryRequest) bool) *discoverypb.DiscoveryRequest {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		s.mu.Lock()
		for _, r := range s.requests {
			if ok(r) {
				s.mu.Unlock()
				return r
			}
		}
		s.mu.Unlock()
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("xdstest: no request %s", what)
		}
	}
}

// Streams is the number of ADS streams opened so far.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams
}

// Requests returns the requests received so far for typeURL.
func (s *Server) Requests(typeURL string) []*discoverypb.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*discoverypb.DiscoveryRequest
	for _, r := range s.requests {
		if r.GetTypeUrl() == typeURL {
			out = append(out, r)
		}
	}
	return out
}

// Cluster builds a Cluster carrying strategy ("" for none) in its Fairway
// metadata (wire.MetadataStrategy).
func Cluster(name, strategy string) *clusterpb.Cluster {
	c := &clusterpb.Cluster{Name: name}
	if strategy != "" {
		c.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
			wire.MetadataNamespace: {Fields: map[string]*structpb.Value{wire.MetadataStrategy: structpb.NewStringValue(strategy)}},
		}}
	}
	return c
}

// WithCallerZones sets c's Fairway metadata wire.MetadataCallerZones to zones
// and returns c.
func WithCallerZones(c *clusterpb.Cluster, zones map[string]float64) *clusterpb.Cluster {
	if c.Metadata == nil {
		c.Metadata = &corepb.Metadata{}
	}
	if c.Metadata.FilterMetadata == nil {
		c.Metadata.FilterMetadata = map[string]*structpb.Struct{}
	}
	md := c.Metadata.FilterMetadata[wire.MetadataNamespace]
	if md == nil {
		md = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		c.Metadata.FilterMetadata[wire.MetadataNamespace] = md
	}
	fields := make(map[string]*structpb.Value, len(zones))
	for z, f := range zones {
		fields[z] = structpb.NewNumberValue(f)
	}
	md.Fields[wire.MetadataCallerZones] = structpb.NewStructValue(&structpb.Struct{Fields: fields})
	return c
}

// Endpoint describes one LbEndpoint for CLA.
type Endpoint struct {
	Addr     string // "IP:PORT"
	Zone     string
	Hostname string
	Weight   uint32 // 0: unset
	Health   corepb.HealthStatus
	Labels   map[string]string
}

// CLA builds a ClusterLoadAssignment with one locality per zone, in the order
// the zones first appear.
func CLA(name string, eps ...Endpoint) *endpointpb.ClusterLoadAssignment {
	cla := &endpointpb.ClusterLoadAssignment{ClusterName: name}
	byZone := map[string]*endpointpb.LocalityLbEndpoints{}
	for _, e := range eps {
		loc := byZone[e.Zone]
		if loc == nil {
			loc = &endpointpb.LocalityLbEndpoints{Locality: &corepb.Locality{Zone: e.Zone}, LoadBalancingWeight: wrapperspb.UInt32(1)}
			byZone[e.Zone] = loc
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		host, portStr, err := net.SplitHostPort(e.Addr)
		if err != nil {
			panic(fmt.Sprintf("xdstest: %v", err))
		}
		port, _ := strconv.ParseUint(portStr, 10, 32)
		lbe := &endpointpb.LbEndpoint{
			HealthStatus: e.Health,
			HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
				Hostname: e.Hostname,
				Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
					Address: host, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
		}
		if e.Weight > 0 {
			lbe.LoadBalancingWeight = wrapperspb.UInt32(e.Weight)
		}
		if len(e.Labels) > 0 {
			labels := map[string]any{}
			for k, v := range e.Labels {
				labels[k] = v
			}
			md, err := structpb.NewStruct(map[string]any{wire.MetadataLabels: labels})
			if err != nil {
				panic(fmt.Sprintf("xdstest: %v", err))
			}
			lbe.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: md}}
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbe)
	}
	return cla
}

// Request is a DiscoveryRequest as the server received it (the server fills
// in the stream's node on every request).
type Request = discoverypb.DiscoveryRequest
