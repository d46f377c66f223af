package client

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
)

// The xDS dial options reach the connection to the control plane (here a
// dialer that counts), not the channel's own connections.
func TestWithXDSDialOptions_ReachTheControlPlaneConnection(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	serve(srv, "echo.default:8080", startBackend(t), "")
	var dials atomic.Int32
	dialer := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	})
	cc := dial(t, "fairway:///echo.default:8080", WithFairway(WithXDSServers(srv.Addr), WithNodeID("xds-dial-options"), WithXDSDialOptions(dialer)))
	defer cc.Close()
	check(t, cc)
	if got := dials.Load(); got != 1 {
		t.Errorf("the xDS dialer dialed %d times, want 1 (the control plane only)", got)
	}
}
