package loadreport_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/fairway-lb/fairway/loadreport"
)

// A backend that serves 8 requests at once reports its load on every call
// and on the ORCA stream; a client reads a health check's trailer as a probe.
func Example() {
	r := loadreport.New(loadreport.WithCapacity(8))
	srv := grpc.NewServer(loadreport.ServerOptions(r)...)
	loadreport.Register(srv, r)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	// ... register the application's services on srv ...
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	var trailer metadata.MD
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer)); err != nil {
		panic(err)
	}
	report, err := loadreport.FromTrailer(trailer)
	if err != nil {
		panic(err)
	}
	fmt.Println("requests in flight:", report.NamedMetrics[loadreport.RIFMetric])
	// Output: requests in flight: 0
}
