package auth_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// benchStreams and benchConns: 1,000 ADS streams over 20 connections (the
// server allows 100 streams per connection).
const (
	benchStreams = 1000
	benchConns   = 20
)

// BenchmarkAuth_ThousandStreams measures, per op, the time for 1,000 ADS
// streams sharing one ServiceAccount token to open and get their first
// response from a fresh server (connect-ms), then the time for one update
// to reach all of them (push-ms), with --auth none and --auth token against
// a real kube-apiserver. Compare the two sub-benchmarks of one run:
//
//	go test -run '^$' -bench ThousandStreams -benchtime 5x ./controlplane/auth/
//
// auth=token/distinct gives every stream a token of its own (1,000
// TokenReviews, as after a restart of the control plane), through a client
// limited to auth.ReviewQPS as `fairway controlplane` configures it.
func BenchmarkAuth_ThousandStreams(b *testing.B) {
	c := startCluster(b)
	tok, _ := c.token(b, "shop", "web", auth.DefaultAudience)
	distinct := make([]string, benchStreams)
	for i := range distinct {
		distinct[i], _ = c.token(b, "shop", "web", auth.DefaultAudience)
	}
	cfg := rest.CopyConfig(c.cfg)
	cfg.QPS, cfg.Burst = auth.ReviewQPS, auth.ReviewBurst
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mode   auth.Mode
		tokens []string
	}{{"auth=none", auth.Mode{}, []string{tok}}, {"auth=token", auth.Mode{Token: true}, []string{tok}}, {"auth=token/distinct", auth.Mode{Token: true}, distinct}} {
		mode := tc.mode
		b.Run(tc.name, func(b *testing.B) {
			var connect, push time.Duration
			var reviews float64
			for range b.N {
				b.StopTimer()
				reg := prometheus.NewRegistry()
				a, err := auth.New(mode, auth.WithTokenReviewer(cs.AuthenticationV1().TokenReviews()), auth.WithRegisterer(reg))
				if err != nil {
					b.Fatal(err)
				}
				s, addr := benchServer(b, a)
				b.StartTimer()
				cd, pd := runStreams(b, s, addr, tc.tokens)
				b.StopTimer()
				connect += cd
				push += pd
				reviews += testkit.MetricValue(b, reg, "fairway_xds_auth_token_reviews_total")
				s.Close()
			}
			b.ReportMetric(float64(connect.Milliseconds())/float64(b.N), "connect-ms")
			b.ReportMetric(float64(push.Milliseconds())/float64(b.N), "push-ms")
			b.ReportMetric(reviews/float64(b.N), "reviews/op")
		})
	}
}

func benchServer(b *testing.B, a *auth.Authenticator) (*xdsserver.Server, string) {
	return serveXDS(b, benchSnapshot(1), xdsserver.WithGRPCServerOptions(grpc.StreamInterceptor(a.StreamInterceptor())),
		xdsserver.WithRequireIdentity(!a.Mode().None()), // as fairway controlplane
		xdsserver.WithDebounce(0))
}

func benchSnapshot(version uint64) *topology.Snapshot {
	var svcs []*topology.Service
	for i := range 19 + int(version) { // each version adds a Cluster

		svc := &topology.Service{Key: topology.ServiceKey{Namespace: "shop", Name: fmt.Sprintf("svc-%d", i), Port: 8080}, Policy: topology.DefaultPolicy()}
		svc.Endpoints = []topology.Endpoint{{Address: fmt.Sprintf("10.0.%d.1", i), Port: 8080, Zone: "zone-a", Ready: true}}
		svcs = append(svcs, svc)
	}
	return topology.NewSnapshot(version, time.Now(), svcs)
}

// runStreams opens benchStreams streams (stream i with tokens[i%len]),
// waits for every first response, then pushes an update and waits until
// every stream has it.
func runStreams(b *testing.B, s *xdsserver.Server, addr string, tokens []string) (connect, push time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	for range benchConns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, cc)
	}
	start := time.Now()
	first, second := make(chan error, benchStreams), make(chan error, benchStreams)
	var wg sync.WaitGroup
	for i := range benchStreams {
		wg.Go(func() {
			sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokens[i%len(tokens)])
			st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conns[i%benchConns]).StreamAggregatedResources(sctx)
			if err == nil {
				err = st.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
			}
			var resp *discoverypb.DiscoveryResponse
			if err == nil {
				resp, err = st.Recv()
			}
			first <- err
			if err == nil {
				err = st.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
			}
			if err == nil {
				_, err = st.Recv()
			}
			second <- err
		})
	}
	for range benchStreams {
		if err := testkit.RecvWithin(b, first, time.Minute, "a first response"); err != nil {
			b.Fatal(err)
		}
	}
	connect = time.Since(start)
	start = time.Now()
	s.Update(benchSnapshot(2))
	for range benchStreams {
		if err := testkit.RecvWithin(b, second, time.Minute, "the update"); err != nil {
			b.Fatal(err)
		}
	}
	push = time.Since(start)
	cancel()
	wg.Wait()
	return connect, push
}
