//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver, for the xdsclient child
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fairway-lb/fairway/client"
	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/tlsfiles/tlstest"
)

// runXDSClientChild makes -n calls through grpc-go's xds:/// resolver to
// -target (its bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG, read at process
// start like GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS) and prints the
// backend of each.
func runXDSClientChild(args []string) int {
	fs := flag.NewFlagSet("xdsclient", flag.ContinueOnError)
	target := fs.String("target", "", "service to call")
	n := fs.Int("n", 5, "calls")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cc, err := grpc.NewClient("xds:///"+*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	for range *n {
		name, err := testbackend.Call(context.Background(), c, 15*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "call:", err)
			return 1
		}
		fmt.Println("served by", name)
	}
	return 0
}

// secureWorld is world with Service echo in namespace shop.
func secureWorld(port int, ips ...string) []string {
	docs := world(port, "", ips...)
	for i := range docs {
		docs[i] = strings.ReplaceAll(docs[i], "namespace: default", "namespace: shop")
	}
	return docs
}

// shopToken creates namespace shop and ServiceAccount web on a real
// apiserver and writes a TokenRequest token for audience to dir/name.
func shopToken(t *testing.T, env *testenv.Env, dir, name, audience string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{}); err != nil {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secs := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tlstest.WriteFile(t, dir, name, []byte(tr.Status.Token))
}

// serverTLS is a test CA and, written in a directory, the CA certificate
// and a server certificate and key it issued for fairway-xds.
type serverTLS struct {
	ca                        *tlstest.CA
	certFile, keyFile, caFile string
}

func newServerTLS(t *testing.T, dir string) serverTLS {
	t.Helper()
	ca := tlstest.NewCA(t, "fairway test CA")
	certPEM, keyPEM := ca.Server(t, "fairway-xds")
	return serverTLS{ca: ca, certFile: tlstest.WriteFile(t, dir, "tls.crt", certPEM),
		keyFile: tlstest.WriteFile(t, dir, "tls.key", keyPEM), caFile: tlstest.WriteFile(t, dir, "ca.crt", ca.PEM)}
}

func TestSecurity_TLSAndTokenEndToEnd(t *testing.T) {
	env := testenv.Start(t)
	dir := t.TempDir()
	tokenPath := shopToken(t, env, dir, "token", "fairway")
	tlsFiles := newServerTLS(t, dir)
	certFile, keyFile, caFile := tlsFiles.certFile, tlsFiles.keyFile, tlsFiles.caFile

	_, portStr, _ := net.SplitHostPort(testkit.FreeAddr(t))
	port, _ := strconv.Atoi(portStr)
	for i, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		b, err := testbackend.Start(net.JoinHostPort(ip, portStr), testbackend.WithName(fmt.Sprintf("pod-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
	}
	path := filepath.Join(dir, "world.yaml")
	writeFile(t, path, secureWorld(port, "127.0.0.1", "127.0.0.2")...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr, "--auth", "token", "--kubeconfig", env.KubeconfigPath,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)
	authenticated := func() float64 {
		return metricValue(cp.metrics(), `fairway_xds_auth_streams_total{method="token",result="authenticated"}`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("FairwayClient", func(t *testing.T) {
		before := authenticated()
		cc, err := grpc.NewClient("fairway:///echo.shop:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
			client.WithFairway(client.WithXDSServers(xdsAddr), client.WithXDSTLS(caFile, "", ""), client.WithXDSTokenFile(tokenPath)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, err := testbackend.Call(ctx, testgrpc.NewTestServiceClient(cc), 20*time.Second); err != nil {
			t.Fatalf("RPC through fairway:/// with TLS and a token: %v", err)
		}
		if got := authenticated() - before; got < 1 {
			t.Errorf("authenticated token streams grew by %v, want at least 1", got)
		}
	})
	t.Run("FairwayClientWithoutToken", func(t *testing.T) {
		cc, err := grpc.NewClient("fairway:///echo.shop:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
			client.WithFairway(client.WithXDSServers(xdsAddr), client.WithXDSTLS(caFile, "", ""), client.WithXDSTokenFile(""),
				client.WithNodeID("no-token")))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, err := testbackend.Call(ctx, testgrpc.NewTestServiceClient(cc), 2*time.Second); err == nil {
			t.Fatal("an RPC succeeded through a channel whose xDS stream has no token")
		}
		within(t, 10*time.Second, "a denial for missing credentials", func() bool {
			return metricValue(cp.metrics(), `fairway_xds_auth_denials_total{reason="missing"}`) >= 1
		}, nil)
	})
	t.Run("GRPCGoProxyless", func(t *testing.T) {
		before := authenticated()
		bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q,
			"channel_creds": [{"type": "tls", "config": {"ca_certificate_file": %q}}],
			"call_creds": [{"type": "jwt_token_file", "config": {"jwt_token_file": %q}}],
			"server_features": ["xds_v3"]}],
			"node": {"id": "shop/grpc-go", "locality": {"zone": "zone-a"}}}`, xdsAddr, caFile, tokenPath)
		p := startProcessEnv(t, "xdsclient", []string{"GRPC_XDS_BOOTSTRAP_CONFIG=" + bootstrap, "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true"},
			"-target", "echo.shop:8080", "-n", "5")
		p.waitUntil(60*time.Second, "the grpc-go client's calls", p.exited)
		if code := p.cmd.ProcessState.ExitCode(); code != 0 || strings.Count(p.out.String(), "served by") != 5 {
			t.Fatalf("grpc-go xds:/// client exited %d; output:\n%s", code, p.out)
		}
		if got := authenticated() - before; got < 1 {
			t.Errorf("authenticated token streams grew by %v, want at least 1", got)
		}
	})
}

// metricValue returns the value of series (name{labels} as exposed, labels
// in name order) in a /metrics text, 0 when absent.
func metricValue(text, series string) float64 {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

func TestSecurity_MTLSFairwayClientEndToEnd(t *testing.T) {
	dir := t.TempDir()
	tlsFiles := newServerTLS(t, dir)
	certFile, keyFile, caFile := tlsFiles.certFile, tlsFiles.keyFile, tlsFiles.caFile
	clientDir := t.TempDir()
	certPEM, keyPEM := tlsFiles.ca.Client(t, "spiffe://cluster.local/ns/shop/sa/web")
	clientCert := tlstest.WriteFile(t, clientDir, "tls.crt", certPEM)
	clientKey := tlstest.WriteFile(t, clientDir, "tls.key", keyPEM)

	b, err := testbackend.Start("127.0.0.1:0", testbackend.WithName("pod-0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	path := filepath.Join(dir, "world.yaml")
	writeFile(t, path, secureWorld(b.Addr().Port, "127.0.0.1")...)
	xdsAddr := testkit.FreeAddr(t)
	cp := startControlPlane(t, path, xdsAddr, "--auth", "mtls", "--trust-domain", "cluster.local",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--client-ca-file", caFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cc, err := grpc.NewClient("fairway:///echo.shop:8080", grpc.WithTransportCredentials(insecure.NewCredentials()),
		client.WithFairway(client.WithXDSServers(xdsAddr), client.WithXDSTLS(caFile, clientCert, clientKey), client.WithXDSTokenFile("")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := testbackend.Call(ctx, testgrpc.NewTestServiceClient(cc), 20*time.Second); err != nil {
		t.Fatalf("RPC through fairway:/// with mTLS: %v", err)
	}
	if got := metricValue(cp.metrics(), `fairway_xds_auth_streams_total{method="mtls",result="authenticated"}`); got < 1 {
		t.Errorf("authenticated mTLS streams = %v, want at least 1", got)
	}

	// grpc-go's xds:/// with a client certificate in its bootstrap.
	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q,
		"channel_creds": [{"type": "tls", "config": {"ca_certificate_file": %q, "certificate_file": %q, "private_key_file": %q}}],
		"server_features": ["xds_v3"]}],
		"node": {"id": "shop/grpc-go", "locality": {"zone": "zone-a"}}}`, xdsAddr, caFile, clientCert, clientKey)
	p := startProcessEnv(t, "xdsclient", []string{"GRPC_XDS_BOOTSTRAP_CONFIG=" + bootstrap}, "-target", "echo.shop:8080", "-n", "3")
	p.waitUntil(60*time.Second, "the grpc-go client's calls", p.exited)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 || strings.Count(p.out.String(), "served by") != 3 {
		t.Fatalf("grpc-go xds:/// client with mTLS exited %d; output:\n%s", code, p.out)
	}
	if got := metricValue(cp.metrics(), `fairway_xds_auth_streams_total{method="mtls",result="authenticated"}`); got < 2 {
		t.Errorf("authenticated mTLS streams = %v, want at least 2 (the Fairway client's and grpc-go's)", got)
	}
}
