package client

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	adminpb "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

// startCSDS serves CSDS on loopback and returns a client of it.
func startCSDS(t *testing.T) statuspb.ClientStatusDiscoveryServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	RegisterCSDS(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	cc := dial(t, lis.Addr().String())
	t.Cleanup(func() { cc.Close() })
	return statuspb.NewClientStatusDiscoveryServiceClient(cc)
}

// csdsStatus is the status of each resource of the one xDS client CSDS
// reports, by "type name", with its version and error.
func csdsStatus(t *testing.T, resp *statuspb.ClientStatusResponse) map[string]*statuspb.ClientConfig_GenericXdsConfig {
	t.Helper()
	if len(resp.GetConfig()) != 1 {
		t.Fatalf("CSDS reports %d xDS clients, want 1", len(resp.GetConfig()))
	}
	out := map[string]*statuspb.ClientConfig_GenericXdsConfig{}
	for _, x := range resp.GetConfig()[0].GetGenericXdsConfigs() {
		out[x.GetTypeUrl()+" "+x.GetName()] = x
	}
	return out
}

// TestCSDS_ReportsACKedThenNACKed: CSDS on the application's gRPC server
// reports the Cluster and assignment of a channel ACKED with their versions
// and resources, the node, then the Cluster NACKED with the rejected version
// and the error once the control plane sends an invalid one; the stream
// answers as Fetch does; DebugHandler lists the channel's endpoint.
func TestCSDS_ReportsACKedThenNACKed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), xdstest.Timeout)
	defer cancel()
	srv := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	backend := startBackend(t)
	serve(srv, name, backend, `[{"p2c":{}}]`)
	cc := dial(t, "fairway:///"+name, WithFairway(WithXDSServers(srv.Addr), WithNodeID("csds-test"), WithZone("zone-a")))
	defer cc.Close()
	check(t, cc)
	csds := startCSDS(t)

	resp, err := csds.FetchClientStatus(ctx, &statuspb.ClientStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if id := resp.GetConfig()[0].GetNode().GetId(); id != "csds-test" {
		t.Errorf("CSDS node id %q, want csds-test", id)
	}
	got := csdsStatus(t, resp)
	for _, typ := range []string{wire.ClusterType, wire.EndpointType} {
		x := got[typ+" "+name]
		if x.GetClientStatus() != adminpb.ClientResourceStatus_ACKED || x.GetVersionInfo() == "" || x.GetXdsConfig() == nil || x.GetLastUpdated() == nil {
			t.Errorf("CSDS %s %s: %v, want ACKED with a version, the resource and its time", typ, name, x)
		}
	}

	_ = srv.Clusters.UpdateResource(name, xdstest.Cluster(name, `[{"no_such_strategy":{}}]`))
	var x *statuspb.ClientConfig_GenericXdsConfig
	testkit.Eventually(ctx, t, "the Cluster NACKED in CSDS", func() bool {
		resp, err := csds.FetchClientStatus(ctx, &statuspb.ClientStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		x = csdsStatus(t, resp)[wire.ClusterType+" "+name]
		return x.GetClientStatus() == adminpb.ClientResourceStatus_NACKED
	})
	if e := x.GetErrorState(); !strings.Contains(e.GetDetails(), "no_such_strategy") || e.GetVersionInfo() == "" || e.GetVersionInfo() == x.GetVersionInfo() || x.GetXdsConfig() == nil {
		t.Errorf("NACKED Cluster: version %q, error state %v; want the previous version and resource kept, the rejected version and the error", x.GetVersionInfo(), e)
	}

	stream, err := csds.StreamClientStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&statuspb.ClientStatusRequest{}); err != nil {
		t.Fatal(err)
	}
	sresp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if s := csdsStatus(t, sresp)[wire.EndpointType+" "+name].GetClientStatus(); s != adminpb.ClientResourceStatus_ACKED {
		t.Errorf("StreamClientStatus: assignment %v, want ACKED", s)
	}
	_ = stream.CloseSend()

	hs := httptest.NewServer(DebugHandler())
	defer hs.Close()
	var eps []EndpointJSON
	r, err := http.Get(hs.URL + "?target=" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if err := json.NewDecoder(r.Body).Decode(&eps); err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].Address != backend || eps[0].Connectivity != "READY" || eps[0].Picks == 0 {
		t.Errorf("DebugHandler: %+v, want the one backend %s READY with a pick", eps, backend)
	}
	if r, err := http.Get(hs.URL + "?target=nothing.default:1"); err != nil || r.StatusCode != http.StatusNotFound {
		t.Errorf("DebugHandler for an unknown target: %v %v, want 404", r, err)
	} else {
		r.Body.Close()
	}
}
