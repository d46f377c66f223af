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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/testkit/xdstest"
	"github.com/fairway-lb/fairway/internal/tlsfiles"
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
	tlsFiles := newServerTLS(t, dir)

	var docs []string
	docs = append(docs, namedService("web", "shop", "", "10.0.0.1")...)
	docs = append(docs, namedService("ledger", "finance", `fairway.io/export-to: "shop"`, "10.0.0.2")...)
	docs = append(docs, namedService("pay", "finance", "", "10.0.0.3")...)
	path := filepath.Join(dir, "world.yaml")
	writeFile(t, path, docs...)
	xdsAddr := testkit.FreeAddr(t)
	startControlPlane(t, path, xdsAddr, "--auth", "token", "--kubeconfig", env.KubeconfigPath, "--default-export-to", ".",
		"--tls-cert-file", tlsFiles.certFile, "--tls-key-file", tlsFiles.keyFile)

	files, err := tlsfiles.Load(tlsfiles.WithCA(tlsFiles.caFile))
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
	for _, typ := range xdstest.Types {
		for _, names := range [][]string{nil, xdstest.ResourceNames(typ, all)} {
			resp := xdstest.FirstResponse(ctx, t, cc, xdstest.SotW, "shop/web-1", typ, names)
			if got, want := resp.Names, xdstest.ResourceNames(typ, visible); !slices.Equal(got, want) {
				t.Errorf("%s, by name %v: shop got %q, want %q", typ, names != nil, got, want)
			}
			if strings.Contains(string(resp.Raw), "pay.finance") || strings.Contains(string(resp.Raw), "10.0.0.3") {
				t.Errorf("%s, by name %v: a response to shop names finance's own Service pay", typ, names != nil)
			}
		}
	}
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
