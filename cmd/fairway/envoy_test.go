package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	bootstrappb "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3" // typed_config of the bootstrap
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpupstreampb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

const envoyBootstrapPath = "../../examples/envoy/bootstrap.yaml"

// loadEnvoyBootstrap reads examples/envoy/bootstrap.yaml into an Envoy
// bootstrap, rejecting unknown fields and unknown Any types.
func loadEnvoyBootstrap(t *testing.T) *bootstrappb.Bootstrap {
	t.Helper()
	data, err := os.ReadFile(envoyBootstrapPath)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", envoyBootstrapPath, err)
	}
	b := &bootstrappb.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("%s is no envoy.config.bootstrap.v3.Bootstrap: %v", envoyBootstrapPath, err)
	}
	return b
}

// validateDeep runs ValidateAll on m and, recursively, on every message
// packed in an Any inside it (ValidateAll does not look into Anys).
func validateDeep(t *testing.T, m proto.Message, where string) {
	t.Helper()
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		t.Fatalf("%s: %s has no ValidateAll", where, proto.MessageName(m))
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	var packed []*anypb.Any
	err := protorange.Range(m.ProtoReflect(), func(p protopath.Values) error {
		if msg, ok := p.Index(-1).Value.Interface().(protoreflect.Message); ok {
			if a, ok := msg.Interface().(*anypb.Any); ok {
				packed = append(packed, a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range packed {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("%s: %s: %v", where, a.GetTypeUrl(), err)
			continue
		}
		validateDeep(t, inner, where+" > "+string(proto.MessageName(inner)))
	}
}

// envoyRouteClusters are the clusters the routes of the bootstrap's static
// listeners send requests to.
func envoyRouteClusters(t *testing.T, b *bootstrappb.Bootstrap) []string {
	t.Helper()
	var names []string
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmpb.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatalf("listener %s, filter %s: %v", l.GetName(), f.GetName(), err)
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						names = append(names, r.GetRoute().GetCluster())
					}
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// isHTTP2 reports whether typed_extension_protocol_options makes Envoy
// speak HTTP/2 to a cluster's endpoints.
func isHTTP2(t *testing.T, opts map[string]*anypb.Any) bool {
	t.Helper()
	a, ok := opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	o := &httpupstreampb.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		t.Fatal(err)
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// TestEnvoyBootstrap_ParsesAndValidates: examples/envoy/bootstrap.yaml is an
// envoy.config.bootstrap.v3.Bootstrap whose every part, the packed
// HttpConnectionManager, router and HTTP protocol options included, passes
// ValidateAll; its ADS stream goes over HTTP/2 to the static cluster
// fairway-xds on port 18000, CDS comes over ADS, and its node states a zone.
func TestEnvoyBootstrap_ParsesAndValidates(t *testing.T) {
	b := loadEnvoyBootstrap(t)
	validateDeep(t, b, "bootstrap")

	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType() != corepb.ApiConfigSource_GRPC || len(ads.GetGrpcServices()) != 1 {
		t.Fatalf("ads_config = %v, want one gRPC service", ads)
	}
	if b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
		t.Errorf("cds_config = %v, want ads", b.GetDynamicResources().GetCdsConfig())
	}
	name := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	i := slices.IndexFunc(b.GetStaticResources().GetClusters(), func(c *clusterpb.Cluster) bool { return c.GetName() == name })
	if i < 0 {
		t.Fatalf("ADS cluster %q is not a static cluster", name)
	}
	xds := b.GetStaticResources().GetClusters()[i]
	port := xds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	if name != "fairway-xds" || port != 18000 || !isHTTP2(t, xds.GetTypedExtensionProtocolOptions()) {
		t.Errorf("ADS cluster %q, port %d, HTTP/2 %v; want fairway-xds, 18000, true", name, port, isHTTP2(t, xds.GetTypedExtensionProtocolOptions()))
	}
	if b.GetNode().GetId() == "" || b.GetNode().GetLocality().GetZone() == "" {
		t.Errorf("node = %v, want an id and a zone", b.GetNode())
	}
}

// rawADS opens an ADS stream to the control plane at xdsAddr; the
// connection is closed when the test ends.
func rawADS(ctx context.Context, t *testing.T, xdsAddr string) discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ads, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ads
}

// adsResources sends one request on a raw ADS stream and returns the
// resources of the first response of that type.
func adsResources(t *testing.T, ads discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient, req *discoverypb.DiscoveryRequest) []*anypb.Any {
	t.Helper()
	if err := ads.Send(req); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := ads.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", req.GetTypeUrl(), err)
		}
		if resp.GetTypeUrl() == req.GetTypeUrl() {
			return resp.GetResources()
		}
	}
}

// TestEnvoyBootstrap_ClustersAreServed: the clusters the bootstrap routes to
// are exactly the Clusters `fairway controlplane --file examples/echo.yaml`
// serves to a wildcard CDS request like Envoy's (from the bootstrap's node),
// each of type EDS over ADS with HTTP/2 upstream, and their assignments hold
// the six pods of the example.
func TestEnvoyBootstrap_ClustersAreServed(t *testing.T) {
	b := loadEnvoyBootstrap(t)
	routed := envoyRouteClusters(t, b)
	xdsAddr := testkit.FreeAddr(t)
	startControlPlane(t, "../../examples/echo.yaml", xdsAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ads := rawADS(ctx, t, xdsAddr)
	var served, edsNames []string
	for _, a := range adsResources(t, ads, &discoverypb.DiscoveryRequest{Node: b.GetNode(), TypeUrl: resource.ClusterType}) {
		c := &clusterpb.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		served = append(served, c.GetName())
		edsNames = append(edsNames, c.GetEdsClusterConfig().GetServiceName())
		if c.GetType() != clusterpb.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || !isHTTP2(t, c.GetTypedExtensionProtocolOptions()) {
			t.Errorf("Cluster %s: type %v, eds_config %v, HTTP/2 %v; want EDS over ADS with HTTP/2 upstream",
				c.GetName(), c.GetType(), c.GetEdsClusterConfig().GetEdsConfig(), isHTTP2(t, c.GetTypedExtensionProtocolOptions()))
		}
	}
	slices.Sort(served)
	if !slices.Equal(routed, served) {
		t.Fatalf("the bootstrap routes to clusters %q, the control plane serves %q for examples/echo.yaml", routed, served)
	}
	for _, a := range adsResources(t, ads, &discoverypb.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: edsNames}) {
		cla := &endpointpb.ClusterLoadAssignment{}
		if err := a.UnmarshalTo(cla); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range cla.GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
		if n != 6 {
			t.Errorf("ClusterLoadAssignment %s has %d endpoints, want the 6 pods of examples/echo.yaml", cla.GetClusterName(), n)
		}
	}
}

// TestEnvoyIngress_Traffic runs a real Envoy with the example bootstrap
// (pointed at this test's control plane and ports) in front of real
// backends, and checks that gRPC requests through it reach every pod of the
// Service. Skipped when no envoy binary is on PATH.
func TestEnvoyIngress_Traffic(t *testing.T) {
	envoyBin, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("no envoy binary on PATH, so no traffic goes through an Envoy ingress here " +
			"(install Envoy, https://www.envoyproxy.io/docs/envoy/latest/start/install, to run it); " +
			"TestEnvoyBootstrap_ParsesAndValidates and TestEnvoyBootstrap_ClustersAreServed still check the bootstrap")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ips := []string{"127.0.0.61", "127.0.0.62", "127.0.0.63"}
	bs := startBackends(t, ips...)
	port := bs[0].Addr().Port
	dir := t.TempDir()
	world := filepath.Join(dir, "world.yaml")
	writeFile(t, world, fmt.Sprintf(e2eService, "echo", port, "2"), fmt.Sprintf(e2eSlice, "echo", port, e2eEndpoints(ips...)))
	xdsAddr := testkit.FreeAddr(t)
	startControlPlane(t, world, xdsAddr)

	listenAddr := testkit.FreeAddr(t)
	config := filepath.Join(dir, "envoy.json")
	writeEnvoyConfig(t, config, xdsAddr, listenAddr, testkit.FreeAddr(t))
	logPath := filepath.Join(dir, "envoy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, envoyBin, "-c", config, "--use-dynamic-base-id", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	cc, err := grpc.NewClient(listenAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	seen := map[string]int{}
	var lastErr error
	for i := 0; i < 600 && len(seen) < len(ips); i++ {
		// Until Envoy has its Cluster, it answers UNAVAILABLE at once.
		name, err := testbackend.Call(ctx, c, 5*time.Second)
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		seen[name]++
	}
	if len(seen) < len(ips) {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("through Envoy, RPCs reached %v, want every one of %v; last error: %v; envoy log:\n%s",
			seen, podNames(ips), lastErr, log)
	}
	t.Logf("through Envoy: %v", seen)
}

// writeEnvoyConfig writes the example bootstrap as JSON to path, with the
// control plane at xdsAddr, the gRPC listener on listenAddr and the admin
// interface on adminAddr (all host:port on loopback).
func writeEnvoyConfig(t *testing.T, path, xdsAddr, listenAddr, adminAddr string) {
	t.Helper()
	b := loadEnvoyBootstrap(t)
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "fairway-xds" {
			c.ClusterDiscoveryType = &clusterpb.Cluster_Type{Type: clusterpb.Cluster_STATIC}
			c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().Address = socketAddress(t, xdsAddr)
		}
	}
	lis := b.GetStaticResources().GetListeners()
	if len(lis) != 1 {
		t.Fatalf("the bootstrap has %d listeners, want 1", len(lis))
	}
	lis[0].Address = socketAddress(t, listenAddr)
	b.GetAdmin().Address = socketAddress(t, adminAddr)
	js, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
}

func socketAddress(t *testing.T, hostPort string) *corepb.Address {
	t.Helper()
	host, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("port of %s: %v", hostPort, err)
	}
	return &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
		Address:       host,
		PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}
