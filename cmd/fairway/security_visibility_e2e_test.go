//go:build linux

package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/tlsfiles"
	"github.com/fairway-lb/fairway/internal/tlsfiles/tlstest"
)

// namedService renders Service name.ns (port 8080, one endpoint at ip,
// annotations as in world) for the file source.
func namedService(name, ns, annotations, ip string) []string {
	docs := world(9000, annotations, ip)
	for i := range docs {
		docs[i] = strings.ReplaceAll(docs[i], "namespace: default", "namespace: "+ns)
		docs[i] = strings.ReplaceAll(docs[i], "echo", name)
	}
	return docs
}

// TestSecurity_TokenIdentityScopesWhatIsServed: a shop ServiceAccount's
// token (from the real API server) sees, by wildcard and by name and for
// every type, its own Services and those exported to shop, and nothing of
// finance's own.
func TestSecurity_TokenIdentityScopesWhatIsServed(t *testing.T) {
	env := testenv.Start(t)
	dir := t.TempDir()
	tokenPath := shopToken(t, env, dir, "token", "fairway")
	ca := tlstest.NewCA(t, "fairway test CA")
	certPEM, keyPEM := ca.Server(t, "fairway-xds")
	certFile := tlstest.WriteFile(t, dir, "tls.crt", certPEM)
	keyFile := tlstest.WriteFile(t, dir, "tls.key", keyPEM)
	caFile := tlstest.WriteFile(t, dir, "ca.crt", ca.PEM)

	var docs []string
	docs = append(docs, namedService("web", "shop", "", "10.0.0.1")...)
	docs = append(docs, namedService("ledger", "finance", `fairway.io/export-to: "shop"`, "10.0.0.2")...)
	docs = append(docs, namedService("pay", "finance", "", "10.0.0.3")...)
	path := filepath.Join(dir, "world.yaml")
	writeFile(t, path, docs...)
	xdsAddr := testkit.FreeAddr(t)
	startControlPlane(t, path, xdsAddr, "--auth", "token", "--kubeconfig", env.KubeconfigPath, "--default-export-to", ".",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)

	files, err := tlsfiles.Load(tlsfiles.WithCA(caFile))
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(files.ClientConfig())))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tok, err := readToken(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)

	visible := []string{"ledger.finance:8080", "web.shop:8080"}
	all := append(slices.Clone(visible), "pay.finance:8080")
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		for _, byName := range []bool{false, true} {
			st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := &discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "shop/web-1"}, TypeUrl: typ}
			if byName {
				req.ResourceNames = resourceNames(typ, all)
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("%s, by name %v: %v", typ, byName, err)
			}
			if got, want := responseNames(t, resp), resourceNames(typ, visible); !slices.Equal(got, want) {
				t.Errorf("%s, by name %v: shop got %q, want %q", typ, byName, got, want)
			}
			b, _ := proto.Marshal(resp)
			if strings.Contains(string(b), "pay.finance") || strings.Contains(string(b), "10.0.0.3") {
				t.Errorf("%s, by name %v: a response to shop names finance's own Service pay", typ, byName)
			}
			st.CloseSend()
		}
	}
}

// resourceNames returns the sorted resource names of type typ for services
// (a Listener also under its FQDN name).
func resourceNames(typ string, services []string) []string {
	var out []string
	for _, n := range services {
		out = append(out, n)
		if typ == resourcev3.ListenerType {
			name, port, _ := strings.Cut(n, ":")
			out = append(out, name+".svc.cluster.local:"+port)
		}
	}
	slices.Sort(out)
	return out
}

func responseNames(t *testing.T, resp *discoverypb.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, r := range resp.GetResources() {
		m, err := r.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cachev3.GetResourceName(m.(cachetypes.Resource)))
	}
	slices.Sort(out)
	return out
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
