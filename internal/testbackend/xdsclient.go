package testbackend

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
)

// XDSClient dials xds:///target through grpc-go's own xDS resolver,
// bootstrapped to the control plane at controlPlane (node zone "zone-a"), as a
// proxyless gRPC client would. The channel is closed when the test ends.
func XDSClient(t testing.TB, controlPlane, target string) testgrpc.TestServiceClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}]}],
		"node": {"id": "fairway-test-client", "locality": {"zone": "zone-a"}}
	}`, controlPlane)
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// Call makes one EmptyCall (waiting for ready, at most timeout) and returns
// the name of the backend that served it.
func Call(ctx context.Context, c testgrpc.TestServiceClient, timeout time.Duration) (string, error) {
	var hdr metadata.MD
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr), grpc.WaitForReady(true)); err != nil {
		return "", err
	}
	if v := hdr.Get(HeaderName); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("response without %s header", HeaderName)
}
