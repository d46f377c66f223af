package pyclient_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/internal/pyclient"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClient_ReportsFailedRPCs: with no xDS server behind the bootstrap, the
// client starts on Debian's gRPC C-core, names its versions, and reports
// each RPC's failure.
func TestClient_ReportsFailedRPCs(t *testing.T) {
	addr := testkit.FreeAddr(t) // nothing listens there

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
