package pyclient_test

import (
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/internal/pyclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClient_ReportsFailedRPCs: with no xDS server behind the bootstrap, the
// client starts on Debian's gRPC C-core, names its versions, and reports
// each RPC's failure.
func TestClient_ReportsFailedRPCs(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there any more

	c := pyclient.Start(t, addr, "pyclient-test")
	if v := c.Versions["grpcio"]; !strings.HasPrefix(v, "1.") {
		t.Errorf("grpcio version %q, want 1.x", v)
	}
	r := c.CallsWithMetadata("echo.default:8080", 1, map[string]string{"x-fairway-shard": "k"})
	if len(r.Served) != 0 || len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0], "14 UNAVAILABLE") {
		t.Fatalf("Calls = %+v, want one UNAVAILABLE error and nothing served", r)
	}
	t.Logf("RPC without a control plane: %s", r.Errors[0])
	c.Connect("other.default:8080")
	c.CloseChannel("echo.default:8080")
	c.CloseChannel("never-opened.default:8080")
}
