package xdsclient

import (
	"fmt"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
)

// BenchmarkClient_EndpointsUpdate measures one ClusterLoadAssignment change
// from the server's cache to the watcher, over loopback: server push, decode,
// validation, delivery and ACK.
func BenchmarkClient_EndpointsUpdate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			s := xdstest.Start(b, "127.0.0.1:0")
			const name = "bench.default:8080"
			cla := func(gen int) []xdstest.Endpoint {
				eps := make([]xdstest.Endpoint, n)
				for i := range eps {
					eps[i] = xdstest.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:%d", i/65536, i/256%256, i%256, 1000+gen%2), Zone: "zone-a", Health: corepb.HealthStatus_HEALTHY}
				}
				return eps
			}
			_ = s.Endpoints.UpdateResource(name, xdstest.CLA(name, cla(0)...))
			c, err := New([]string{s.Addr}, &corepb.Node{Id: "bench"}, WithBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			r := newRecorder()
			defer c.WatchEndpoints(name, r)()
			<-r.endpoints
			// Prebuild the resources so the loop measures the wire path only.
			res := [2]*endpointpb.ClusterLoadAssignment{xdstest.CLA(name, cla(1)...), xdstest.CLA(name, cla(2)...)}
			b.ResetTimer()
			for i := range b.N {
				_ = s.Endpoints.UpdateResource(name, res[i%2])
				<-r.endpoints
			}
		})
	}
}
