package nodeclient_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/internal/nodeclient"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClient_ReportsFailedRPCs: with no xDS server behind the bootstrap, the
// client starts, names its versions, and reports each RPC's failure.
func TestClient_ReportsFailedRPCs(t *testing.T) {
	addr := testkit.FreeAddr(t) // nothing listens there

	c := nodeclient.Start(t, addr, "nodeclient-test")
	if v := c.Versions["grpc-js-xds"]; !strings.HasPrefix(v, "1.14.") {
		t.Errorf("grpc-js-xds version %q, want 1.14.x (hack/nodeclient/package-lock.json)", v)
	}
	r := c.Calls("echo.default:8080", 1)
	if len(r.Served) != 0 || len(r.Errors) != 1 {
		t.Fatalf("Calls = %+v, want one error and nothing served", r)
	}
	t.Logf("RPC without a control plane: %s", r.Errors[0])
	c.CloseChannel("echo.default:8080")
	c.CloseChannel("never-opened.default:8080")
}
