package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	adminpb "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

const echoName = "echo.default:8080"

// configDump GETs the control plane's /debug/config_dump with query.
func configDump(t *testing.T, adminAddr, query string) xdsserver.ConfigDump {
	t.Helper()
	var d xdsserver.ConfigDump
	if _, err := getJSON(context.Background(), "http://"+adminAddr+"/debug/config_dump"+query, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// dumped is "type name" of every resource of d.
func dumped(d xdsserver.ConfigDump) []string {
	var out []string
	for _, td := range d.Types {
		for _, r := range td.Resources {
			out = append(out, td.Type+" "+r.Name)
		}
	}
	return out
}

// TestControlPlane_ConfigDumpServesEcho: with examples/echo.yaml,
// /debug/config_dump holds echo.default:8080's Cluster, assignment, Listener
// and RouteConfiguration as protojson, ?type= and ?name= filter it, and
// --enable-pprof serves /debug/pprof/ (absent without it).
func TestControlPlane_ConfigDumpServesEcho(t *testing.T) {
	cp := startControlPlane(t, "../../examples/echo.yaml", testkit.FreeAddr(t), "--enable-pprof")
	all := dumped(configDump(t, cp.adminAddr, ""))
	for _, want := range []string{"cluster " + echoName, "endpoint " + echoName, "listener " + echoName, "route " + echoName} {
		if !slices.Contains(all, want) {
			t.Errorf("config_dump lacks %q; has %q", want, all)
		}
	}
	d := configDump(t, cp.adminAddr, "?type=endpoint&name="+echoName)
	if got := dumped(d); !slices.Equal(got, []string{"endpoint " + echoName}) {
		t.Errorf("config_dump?type=endpoint&name=%s: %q, want the assignment alone", echoName, got)
	}
	var cla struct {
		ClusterName string `json:"cluster_name"`
	}
	if r := d.Types[0].Resources[0].Resource; json.Unmarshal(r, &cla) != nil || cla.ClusterName != echoName || !strings.Contains(string(r), "127.0.0.6") {
		t.Errorf("assignment as protojson: %s", r)
	}
	if got := dumped(configDump(t, cp.adminAddr, "?name=nothing.default:1")); len(got) != 0 {
		t.Errorf("config_dump?name=nothing.default:1: %q, want nothing", got)
	}
	if got := dumped(configDump(t, cp.adminAddr, "?name=echo.default.svc.cluster.local:8080")); len(got) < 4 {
		t.Errorf("config_dump by the FQDN name: %q, want every resource of the service", got)
	}
	resp, err := http.Get("http://" + cp.adminAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/ with --enable-pprof: %s, want 200", resp.Status)
	}
	xds := xdsserver.New()
	defer xds.Close()
	rec := httptest.NewRecorder()
	adminHandler(xds, nil, false).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --enable-pprof: %d, want 404", rec.Code)
	}
}

// nackEchoCluster opens a raw ADS stream as node id, subscribes to echo's
// Cluster and NACKs the first response with msg.
func nackEchoCluster(ctx context.Context, t *testing.T, xdsAddr, id, msg string) {
	t.Helper()
	ads := rawADS(ctx, t, xdsAddr)
	req := &discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: id, Locality: &corepb.Locality{Zone: "zone-n"}},
		TypeUrl: wire.ClusterType, ResourceNames: []string{echoName}}
	if err := ads.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := ads.Recv()
	if err != nil {
		t.Fatal(err)
	}
	nack := &discoverypb.DiscoveryRequest{TypeUrl: wire.ClusterType, ResourceNames: []string{echoName},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: msg}}
	if err := ads.Send(nack); err != nil {
		t.Fatal(err)
	}
}

// startCSDS serves client.RegisterCSDS on loopback and returns its address.
func startCSDS(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	client.RegisterCSDS(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// csdsACKed reports whether the client behind CSDS at addr holds echo's
// Cluster and assignment ACKED with a version.
func csdsACKed(ctx context.Context, t *testing.T, addr string) bool {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := statuspb.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statuspb.ClientStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	for _, cfg := range resp.GetConfig() {
		for _, x := range cfg.GetGenericXdsConfigs() {
			if x.GetName() == echoName && x.GetClientStatus() == adminpb.ClientResourceStatus_ACKED && x.GetVersionInfo() != "" {
				acked++
			}
		}
	}
	return acked == 2
}

// hasLine reports whether a line of out holds every one of parts, in order.
func hasLine(out string, parts ...string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		rest, ok := line, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			return true
		}
	}
	return false
}

func inspect(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"inspect"}, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("fairway inspect %s: exit code %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// TestInspect_ControlPlaneAndClient: /debug/clients shows a raw ADS stream's
// node id, zone, subscription and NACK; a Fairway client dialled to echo
// reports its Cluster and assignment ACKED over CSDS; `fairway inspect`
// prints both sides, as tables and as JSON.
func TestInspect_ControlPlaneAndClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, "../../examples/echo.yaml", xdsAddr)
	nackEchoCluster(ctx, t, xdsAddr, "raw-nacker", "bad cluster for the test")
	var stream xdsserver.StreamDump
	testkit.Eventually(ctx, t, "the NACK in /debug/clients", func() bool {
		var c xdsserver.ClientsDump
		if _, err := getJSON(ctx, "http://"+cp.adminAddr+"/debug/clients", &c); err != nil {
			t.Fatal(err)
		}
		for _, st := range c.Streams {
			if st.NodeID == "raw-nacker" && len(st.Subscriptions) == 1 && st.Subscriptions[0].NackError != "" {
				stream = st
				return true
			}
		}
		return false
	})
	sub := stream.Subscriptions[0]
	if stream.Zone != "zone-n" || sub.Type != "cluster" || !slices.Equal(sub.Names, []string{echoName}) || sub.NameCount != 1 ||
		sub.NackError != "bad cluster for the test" || sub.NackedVersion == "" || sub.NackedVersion != sub.SentVersion || sub.AckedVersion != "" {
		t.Errorf("/debug/clients stream: %+v", stream)
	}

	cc, err := grpc.NewClient("fairway:///"+echoName, grpc.WithTransportCredentials(insecure.NewCredentials()),
		client.WithFairway(client.WithXDSServers(xdsAddr), client.WithZone("zone-a"), client.WithNodeID("inspect-client")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()
	csds := startCSDS(t)
	testkit.Eventually(ctx, t, "echo's Cluster and assignment ACKED over CSDS", func() bool { return csdsACKed(ctx, t, csds) })
	debug := httptest.NewServer(client.DebugHandler())
	defer debug.Close()

	out := inspect(t, "--control-plane", cp.adminAddr, "--name", echoName)
	for _, want := range [][]string{{"cluster", echoName, "policy least_request"}, {"endpoint", echoName, "6 endpoints in 3 localities"},
		{"raw-nacker", "zone-n", "cluster", "bad cluster for the test"}, {"inspect-client", "zone-a", "endpoint", echoName}} {
		if !hasLine(out, want...) {
			t.Errorf("fairway inspect --control-plane has no line with %q:\n%s", want, out)
		}
	}
	out = inspect(t, "--client", csds, "--name", echoName, "--client-debug", debug.URL)
	for _, want := range [][]string{{"node inspect-client, zone zone-a"}, {"cluster", echoName, "ACKED"}, {"endpoint", echoName, "ACKED"},
		{echoName, "127.0.0.6:8080", "zone-c"}} {
		if !hasLine(out, want...) {
			t.Errorf("fairway inspect --client has no line with %q:\n%s", want, out)
		}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(inspect(t, "--control-plane", cp.adminAddr, "--json")), &raw); err != nil || raw["config_dump"] == nil || raw["clients"] == nil {
		t.Errorf("fairway inspect --json: %v, keys %v", err, raw)
	}
}
