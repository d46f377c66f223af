package xdsserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

// newBenchServer is a server with benchWorld pushed, for benchmarks of the
// per-request bookkeeping (the callbacks, called directly).
func newBenchServer(b *testing.B) *Server { return newBenchServerT(b, prometheus.NewRegistry()) }

// newBenchServerT is newBenchServer for tests, registering on reg.
func newBenchServerT(b testing.TB, reg *prometheus.Registry) *Server {
	s := New(WithRegisterer(reg), WithDebounce(0),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	b.Cleanup(s.Close)
	s.Update(topology.NewSnapshot(1, time.Now(), benchWorld()))
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("the first push did not happen within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return s
}

// BenchmarkStream_SotWACK is a SotW Cluster stream subscribed to 100
// Clusters by name: each iteration is a response and the client's ACK of
// it, which repeats the subscription.
func BenchmarkStream_SotWACK(b *testing.B) {
	s := newBenchServer(b)
	sid := streamID{protoSotW, 1}
	if err := s.streamOpened(context.Background(), sid); err != nil {
		b.Fatal(err)
	}
	var names []string
	for i := range 100 {
		names = append(names, topology.ServiceKey{Namespace: fmt.Sprintf("ns-%d", i%20), Name: fmt.Sprintf("svc-%d", i), Port: 8080}.ResourceName())
	}
	node := &corepb.Node{Id: "bench", Locality: &corepb.Locality{Zone: "zone-1"}, ClientFeatures: []string{wire.CallerZonesFeature}}
	req := streamRequest{node: node, typeURL: resourcev3.ClusterType, names: names}
	if _, err := s.request(sid, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		version, nonce := fmt.Sprint(i), fmt.Sprint(i)
		s.responded(sid, resourcev3.ClusterType, version, nonce)
		req.version, req.nonce = version, nonce
		if _, err := s.request(sid, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStream_DeltaSubscriptionChange is a delta Cluster stream
// subscribed to 9,999 names: each iteration subscribes to one more name or
// unsubscribes from it.
func BenchmarkStream_DeltaSubscriptionChange(b *testing.B) {
	s := newBenchServer(b)
	sid := streamID{protoDelta, 1}
	if err := s.streamOpened(context.Background(), sid); err != nil {
		b.Fatal(err)
	}
	names := make([]string, 9999)
	for i := range names {
		names[i] = fmt.Sprintf("cluster-%d", i)
	}
	node := &corepb.Node{Id: "bench"}
	if _, err := s.request(sid, streamRequest{node: node, typeURL: resourcev3.ClusterType, names: names}); err != nil {
		b.Fatal(err)
	}
	one := []string{"one-more"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req := streamRequest{typeURL: resourcev3.ClusterType, names: one}
		if i%2 == 1 {
			req = streamRequest{typeURL: resourcev3.ClusterType, unsubscribe: one}
		}
		if _, err := s.request(sid, req); err != nil {
			b.Fatal(err)
		}
	}
}
